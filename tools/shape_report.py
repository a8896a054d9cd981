"""How often a generator's level-10 mesh is one closed head: connected components over seeds, previews, a fakes grid."""

import json
import os
import sys

import click
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # Run from anywhere.

from eg3d_rlhf.geometry import mesh, preview  # noqa: E402
from eg3d_rlhf.geometry.sigma import CubeGrid, SigmaField, eg3d_border_pad, flip_and_pad     # noqa: E402
from eg3d_rlhf.cli import load_generator, parse_range, pick_device, require_trust, seed_latent  # noqa: E402
from training.camera_utils import orbit_camera_label                                # noqa: E402

#----------------------------------------------------------------------------

def seed_shape(G, seed, grid, c, truncation_psi, level):
    """(volume with gen_samples' border, mesh statistics) of one seed."""
    field = SigmaField.from_latents(G, seed_latent(G, seed), c, truncation_psi=truncation_psi, noise_mode='const')
    volume = field.sample_grid(grid)[0].cpu().numpy()
    volume = flip_and_pad(volume, flip=False, pad=eg3d_border_pad(grid.resolution))
    verts, faces = mesh.extract_mesh(volume, grid, level=level)
    fractions = mesh.component_fractions(verts, faces)
    stats = dict(seed=seed, faces=len(faces), components=len(fractions),
        largest_fraction=float(fractions[0]) if len(fractions) else 0.0, closed=mesh.is_closed(faces))
    return volume, stats


@torch.no_grad()
def fakes_grid(G, seeds, c, truncation_psi, columns=8):
    """uint8 [rows*R, columns*R, 3] of G's frontal renders of `seeds`."""
    images = []
    for seed in seeds:
        ws = G.mapping(seed_latent(G, seed).to(c.device), c, truncation_psi=truncation_psi)
        img = G.synthesis(ws, c, noise_mode='const')['image'][0]
        images.append(preview.rgb_picture(img))
    return tile(images, columns)


def tile(pictures, columns):
    """Pictures of one shape ([H, W] or [H, W, C]) laid out in rows of `columns`, white where the last row ends."""
    rows = (len(pictures) + columns - 1) // columns
    blank = np.full_like(pictures[0], 255)
    pictures = list(pictures) + [blank] * (rows * columns - len(pictures))
    return np.concatenate([np.concatenate(pictures[r * columns:(r + 1) * columns], axis=1) for r in range(rows)], axis=0)

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', 'network_pkl', help='Network pickle (path or URL)', required=True, metavar='PKL')
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust PKL: loading a pickle runs code stored in it')
@click.option('--seeds', type=parse_range, help="Seeds, e.g. '0-99'", default='0-99', show_default=True, metavar='LIST')
@click.option('--res', 'resolution', type=click.IntRange(min=8), default=128, show_default=True, help='Points per cube axis')
@click.option('--trunc', 'truncation_psi', type=float, default=0.7, show_default=True, help='Truncation psi')
@click.option('--level', type=float, default=10, show_default=True, help='Iso level of raw sigma')
@click.option('--threshold', type=click.FloatRange(0, 1), default=0.9, show_default=True,
    help='A seed counts as one head when its largest component holds at least this share of the surface area')
@click.option('--previews', type=click.IntRange(min=0), default=8, show_default=True, help='Seeds (the first ones) to draw')
@click.option('--outdir', help='Output folder', required=True, metavar='DIR')
@click.option('--dry-run', is_flag=True, help='Print what would be done; load and write nothing')
@click.option('--device', 'device_name', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
def main(network_pkl, trust_pickle, seeds, resolution, truncation_psi, level, threshold, previews, outdir, dry_run, device_name):
    """Extract each seed's iso-surface on the full cube (gen_samples' frontal conditioning camera and border) and
    measure its connected components by surface area. Writes report.json (per seed and the share of seeds that
    are one head), previews.png (front / three-quarter / profile, one row per seed) and fakes.png.

    \b
    python tools/shape_report.py --network=checkpoints/synthetic-heads64.pkl --trust-pickle --outdir=out
    """
    require_trust(network_pkl, trust_pickle)
    device = pick_device(device_name)
    if dry_run:
        print(f'would load {network_pkl} on {device}, mesh {len(seeds)} seeds on a {resolution}^3 cube at level {level} '
            f'(psi {truncation_psi}) and write report.json, previews.png and fakes.png to {outdir}')
        return
    G = load_generator(network_pkl, device)
    grid = CubeGrid(resolution, cube_length=G.rendering_kwargs['box_warp'])
    c = orbit_camera_label(G.rendering_kwargs, device=device)
    os.makedirs(outdir, exist_ok=True)

    per_seed, rows = [], []
    for i, seed in enumerate(tqdm(seeds, desc='meshing', unit='seed')):
        volume, stats = seed_shape(G, seed, grid, c, truncation_psi, level)
        per_seed.append(stats)
        if i < previews:
            rows.append(np.concatenate(list(preview.render_views(volume, grid, level=level, resolution=128).values()), axis=1))
    single = [s['largest_fraction'] >= threshold for s in per_seed]
    report = dict(network=os.path.abspath(network_pkl), resolution=resolution, truncation_psi=truncation_psi,
        level=level, threshold=threshold, num_seeds=len(seeds), single_head_fraction=float(np.mean(single)),
        closed_fraction=float(np.mean([s['closed'] for s in per_seed])),
        median_largest_fraction=float(np.median([s['largest_fraction'] for s in per_seed])), seeds=per_seed)
    with open(os.path.join(outdir, 'report.json'), 'w') as f:
        json.dump(report, f, indent=2)
    if rows:
        preview.save_picture(np.concatenate(rows, axis=0), os.path.join(outdir, 'previews.png'))
        preview.save_picture(fakes_grid(G, seeds[:previews], c, truncation_psi), os.path.join(outdir, 'fakes.png'))
    print(f'{sum(single)}/{len(seeds)} seeds ({100 * report["single_head_fraction"]:.0f}%) have a largest component '
        f'with >= {100 * threshold:.0f}% of the surface; {100 * report["closed_fraction"]:.0f}% are closed; wrote {outdir}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
