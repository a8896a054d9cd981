"""Sample the raw sigma (density) of EG3D generators on a cube or the published face slab; write .npy and a .ply mesh."""

import os

import click
import numpy as np
from tqdm import tqdm

from eg3d_rlhf.cli import (OUT_DIR, FINITE, NETWORK_HELP, conditions_option, device_option, load_generator,
    network_keys, network_path, parse_range, pick_device)
from eg3d_rlhf.generators.base import sample_id
from eg3d_rlhf.geometry import mesh
from eg3d_rlhf.geometry.sigma import CubeGrid, eg3d_border_pad, flip_and_pad, slab_grid

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', 'network_pkl', help=NETWORK_HELP, required=True, metavar='PKL|PT|bundled|bundled-flow')
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust PKL: loading a pickle runs code stored in it')
@click.option('--seeds', type=parse_range, help="Seeds, e.g. '0-3' or '0,2,5-7'", required=True, metavar='LIST')
@conditions_option
@click.option('--res', 'resolution', type=click.IntRange(min=2), default=256, show_default=True, help='Points per cube axis, N')
@click.option('--slab', is_flag=True, help='Sample only the published face slab of the N^3 cube')
@click.option('--trunc', 'truncation_psi', type=FINITE, default=1, show_default=True, help='Truncation psi (EG3D)')
@click.option('--trunc-cutoff', 'truncation_cutoff', type=int, default=14, show_default=True,
    help='Truncation cutoff (EG3D)')
@click.option('--exact-grid', is_flag=True, help="Use gen_samples' off-grid create_samples coordinates (EG3D)")
@click.option('--chunk', type=click.IntRange(min=1), default=2**18, show_default=True, help='Points decoded at once')
@click.option('--level', type=FINITE, default=10, show_default=True, help='Marching-cubes iso level of raw sigma')
@click.option('--fov-deg', type=FINITE, default=18.837, show_default=True, help='Conditioning camera field of view (EG3D)')
@click.option('--outdir', type=OUT_DIR, help='Output folder', required=True, metavar='DIR')
@click.option('--dry-run', is_flag=True, help='Print what would be written; load and write nothing')
@device_option
def main(network_pkl, trust_pickle, seeds, conditions, resolution, slab, truncation_psi, truncation_cutoff, exact_grid, chunk,
        level, fov_deg, outdir, dry_run, device_name):
    """Write <id>.npy (raw sigma, float32, (x, y, z) order, not flipped) and <id>.ply (the iso-surface at --level
    in world units) for each seed (id seedNNNNNN), or each seed under each condition of a flow generator (id
    cCC-seedNNNNNN). Cube meshes get gen_samples' border treatment
    (the outer int(30*N/256) voxels set to -1000 so the surface closes); slab meshes are taken as sampled.

    \b
    python tools/extract_sigma.py --network=ffhq512-128.pkl --trust-pickle --seeds=0-3 --slab --outdir=out
    python tools/extract_sigma.py --network=bundled-flow --seeds=0-3 --conditions=0,7 --outdir=out
    """
    network_pkl = network_path(network_pkl, trust_pickle)
    device = pick_device(device_name)
    keys = network_keys(network_pkl, seeds, conditions)
    paths = [os.path.join(outdir, sample_id(*key)) for key in keys]
    if dry_run:
        kind = 'slab' if slab else 'cube'
        print(f'would load {network_pkl} on {device}, sample a {kind} of the {resolution}^3 grid '
            f'(psi {truncation_psi}, cutoff {truncation_cutoff}, chunk {chunk}) and write:')
        for path in paths:
            print(f'  {path}.npy  {path}.ply')
        return

    generator = load_generator(network_pkl, device, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
        fov_degrees=fov_deg)
    make_grid = slab_grid if slab else CubeGrid
    grid = make_grid(resolution, cube_length=generator.cube_length, exact_eg3d_grid=exact_grid)
    os.makedirs(outdir, exist_ok=True)

    with tqdm(total=len(keys) * grid.num_points, unit='pt', unit_scale=True) as bar:
        for (seed, condition), path in zip(keys, paths):
            bar.set_description(os.path.basename(path))
            field = generator.field([seed], condition)
            sigma = field.sample_grid(grid, chunk=chunk, progress=bar.update)[0].cpu().numpy()
            np.save(path + '.npy', sigma.astype(np.float32))
            if not slab:
                sigma = flip_and_pad(sigma, flip=False, pad=eg3d_border_pad(resolution))
            verts, faces = mesh.extract_mesh(sigma, grid, level=level)
            mesh.write_ply(path + '.ply', verts, faces)
    print(f'wrote {len(keys)} x (.npy, .ply) to {outdir}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
