"""Make datasets in EG3D's format; `synthetic-heads` renders the procedural heads world."""

import io
import json
import os
import time
import zipfile

import click
import numpy as np
import PIL.Image

from eg3d_rlhf.cli import SEED, OUT_FILE, FiniteRange, refuse_overwrite
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.synthetic import dataset_writer

#----------------------------------------------------------------------------

@click.group()
def main():
    """Dataset tools (EG3D format: a zip of PNGs with dataset.json camera labels)."""


@main.command('synthetic-heads')
@click.option('--out', type=OUT_FILE, required=True, metavar='ZIP', help='Output zip file')
@click.option('--count', type=click.IntRange(min=1), required=True, help='Number of images')
@click.option('--resolution', type=click.IntRange(min=8, max=1024), default=64, show_default=True, help='Image size (a power of two)')
@click.option('--seed', type=SEED, default=0, show_default=True, help='Dataset seed; sample i is drawn from (seed, i)')
@click.option('--defect-rate', type=FiniteRange(0, 1), default=0.0, show_default=True, help='Fraction of heads with geometric defects')
@click.option('--supersample', type=click.IntRange(1, 4), default=2, show_default=True, help='Anti-aliasing: render N x N rays per pixel')
@click.option('--force', is_flag=True, help='Overwrite --out if it exists')
@click.option('--dry-run', is_flag=True, help='Check the arguments and print what would be written; write nothing')
def synthetic_heads(out, count, resolution, seed, defect_rate, supersample, force, dry_run):
    """Render procedural 3D heads from FFHQ-like cameras; store their generating parameters in params.jsonl."""
    if not out.endswith('.zip'):
        raise click.ClickException(f'--out must be a .zip path, got {out}')
    if resolution & (resolution - 1):
        raise click.ClickException(f'--resolution must be a power of two (EG3D networks need one), got {resolution}')
    if os.path.exists(out) and not force:
        raise click.ClickException(f'{out} exists; pass --force to overwrite it')
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise click.ClickException(f'folder {parent} does not exist')
    plan = f'{count} images of {resolution}x{resolution} ({supersample}x{supersample} rays per pixel), seed {seed}, defect rate {defect_rate}, to {out}'
    if dry_run:
        print(f'would write {plan}')
        return

    start = time.time()
    summary = dataset_writer.write_dataset(out, count=count, resolution=resolution, seed=seed, defect_rate=defect_rate, supersample=supersample)
    seconds = time.time() - start
    print(f'wrote {plan} in {seconds:.1f} s ({count / seconds:.1f} img/s); '
          f'{summary["defective"]} with defects {summary["kinds"]}')


@main.command('grid')
@click.option('--data', required=True, metavar='ZIP', help='Dataset zip (EG3D format)')
@click.option('--out', type=OUT_FILE, required=True, metavar='PNG', help='Output image')
@click.option('--count', type=click.IntRange(min=1), default=32, show_default=True, help='Images to tile, in label order')
@click.option('--cols', type=click.IntRange(min=1), default=8, show_default=True, help='Images per row')
@click.option('--force', is_flag=True, help='Overwrite --out if it exists')
def grid(data, out, count, cols, force):
    """Tile the first images of a dataset zip into one PNG (e.g. docs/synthetic_heads.png)."""
    refuse_overwrite(out, force=force, inputs={'--data': data})
    try:
        with zipfile.ZipFile(data) as zf:
            fnames = [fname for fname, _ in json.loads(zf.read('dataset.json'))['labels']][:count]
            images = [np.array(PIL.Image.open(io.BytesIO(zf.read(f))).convert('RGB')) for f in fnames]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise click.ClickException(f'cannot read images from {data}: {err}')
    preview.save_picture(preview.tile(images, cols), out)
    print(f'wrote {len(images)} images of {data} as a {-(-len(images) // cols)}x{cols} grid to {out}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()
