"""Make datasets in EG3D's format; `synthetic-heads` renders the procedural heads world."""

import os
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # Run from anywhere.

from eg3d_rlhf.synthetic import dataset_writer  # noqa: E402

#----------------------------------------------------------------------------

@click.group()
def main():
    """Dataset tools (EG3D format: a zip of PNGs with dataset.json camera labels)."""


@main.command('synthetic-heads')
@click.option('--out', required=True, metavar='ZIP', help='Output zip file')
@click.option('--count', type=click.IntRange(min=1), required=True, help='Number of images')
@click.option('--resolution', type=click.IntRange(min=8, max=1024), default=64, show_default=True, help='Image size (a power of two)')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Dataset seed; sample i is drawn from (seed, i)')
@click.option('--defect-rate', type=click.FloatRange(0, 1), default=0.0, show_default=True, help='Fraction of heads with geometric defects')
@click.option('--force', is_flag=True, help='Overwrite --out if it exists')
@click.option('--dry-run', is_flag=True, help='Check the arguments and print what would be written; write nothing')
def synthetic_heads(out, count, resolution, seed, defect_rate, force, dry_run):
    """Render procedural 3D heads from FFHQ-like cameras; store their generating parameters in params.jsonl."""
    if not out.endswith('.zip'):
        raise click.ClickException(f'--out must be a .zip path, got {out}')
    if resolution & (resolution - 1):
        raise click.ClickException(f'--resolution must be a power of two (EG3D networks need one), got {resolution}')
    if os.path.isdir(out):
        raise click.ClickException(f'--out {out} is a directory')
    if os.path.exists(out) and not force:
        raise click.ClickException(f'{out} exists; pass --force to overwrite it')
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise click.ClickException(f'folder {parent} does not exist')
    plan = f'{count} images of {resolution}x{resolution}, seed {seed}, defect rate {defect_rate}, to {out}'
    if dry_run:
        print(f'would write {plan}')
        return

    # The renderer runs many small elementwise ops; one thread was several times faster than two when
    # measured on a shared 2-core machine, where OpenMP workers wait on each other.
    torch.set_num_threads(1)
    start = time.time()
    summary = dataset_writer.write_dataset(out, count=count, resolution=resolution, seed=seed, defect_rate=defect_rate)
    seconds = time.time() - start
    print(f'wrote {plan} in {seconds:.1f} s ({count / seconds:.1f} img/s); '
          f'{summary["defective"]} with defects {summary["kinds"]}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()
