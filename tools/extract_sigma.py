"""Sample the raw sigma (density) of EG3D generators on a cube or the published face slab; write .npy, a .ply mesh, .mrc."""

# pylint: disable=wrong-import-position
import gc

# Importing torch makes ~165k objects that live to the end; with the collector on, it rescans them hundreds of times
# while they are made (a sixth of start-up): it is off while this module imports, and what they made is frozen out of
# its sight afterwards. Results do not change.
gc.disable()

import os

import click
import numpy as np
from tqdm import tqdm

import dnnlib
from eg3d_rlhf.cli import (OUT_DIR, FINITE, NETWORK_HELP, all_or_nothing, conditions_option, device_option, force_option, load_generator,
    mesh_convention_option, network_keys, network_path, outermost_new_folder, parse_range, pick_device, refuse_overwrite)
from eg3d_rlhf.generators.base import sample_id
from eg3d_rlhf.geometry import convention, mesh
from eg3d_rlhf.geometry.sigma import CubeGrid, slab_grid

gc.freeze()
gc.enable()

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
@mesh_convention_option
@click.option('--mrc', 'write_mrc', is_flag=True, help='Also write <id>.mrc, the meshed volume as an MRC map (ChimeraX)')
@click.option('--outdir', type=OUT_DIR, help='Output folder', required=True, metavar='DIR')
@force_option
@click.option('--dry-run', is_flag=True, help='Print what would be written; load and write nothing')
@device_option
def main(network_pkl, trust_pickle, seeds, conditions, resolution, slab, truncation_psi, truncation_cutoff, exact_grid, chunk,
        level, fov_deg, mesh_convention, write_mrc, outdir, force, dry_run, device_name):
    """Write <id>.npy (raw sigma, float32, (x, y, z) order, not flipped) and <id>.ply (the iso-surface at --level)
    for each seed (id seedNNNNNN), or each seed under each condition of a flow generator (id cCC-seedNNNNNN).

    \b
    --mesh-convention=ours: the mesh in world units; a cube gets gen_samples' border (the outer int(30*N/256)
      voxels set to -1000 so the surface closes), a slab is meshed as sampled.
    --mesh-convention=published: the paper's meshes: x flipped, borders of 60/256 (x), 30/256 (y), 80/256 (rear z)
      and 30/256 (front z) set to -1000, transposed to (z, y, x), vertex = -0.5 + index / N.
    --mrc adds <id>.mrc holding the volume the mesh is made from (border included), its voxel size and origin.
    Existing outputs are refused without --force.

    \b
    python tools/extract_sigma.py --network=ffhq512-128.pkl --trust-pickle --seeds=0-3 --slab --outdir=out
    python tools/extract_sigma.py --network=ffhq512-128.pkl --trust-pickle --seeds=0 --mesh-convention=published --mrc --outdir=out
    python tools/extract_sigma.py --network=bundled-flow --seeds=0-3 --conditions=0,7 --outdir=out
    """
    network_pkl = network_path(network_pkl, trust_pickle)
    device = pick_device(device_name)
    keys = network_keys(network_pkl, seeds, conditions)
    paths = [os.path.join(outdir, sample_id(*key)) for key in keys]
    extensions = ('.npy', '.ply') + (('.mrc',) if write_mrc else ())
    refuse_overwrite(*(path + ext for path in paths for ext in extensions), force=force,
        inputs={'--network': network_pkl})
    if dry_run:
        kind = 'slab' if slab else 'cube'
        print(f'would load {network_pkl} on {device}, sample a {kind} of the {resolution}^3 grid '
            f'(psi {truncation_psi}, cutoff {truncation_cutoff}, chunk {chunk}), mesh it in the {mesh_convention} '
            'convention and write:')
        for path in paths:
            print('  ' + '  '.join(path + ext for ext in extensions))
        return

    if write_mrc:
        from eg3d_rlhf.geometry import mrc # pylint: disable=import-outside-toplevel  # mrcfile for --mrc alone.
    generator = load_generator(network_pkl, device, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
        fov_degrees=fov_deg)
    make_grid = slab_grid if slab else CubeGrid
    grid = make_grid(resolution, cube_length=generator.cube_length, exact_eg3d_grid=exact_grid)
    with all_or_nothing(outdir, outermost_new_folder(os.path.join(outdir, 'x'))), \
            tqdm(total=len(keys) * grid.num_points, unit='pt', unit_scale=True) as bar:
        os.makedirs(outdir, exist_ok=True)
        for (seed, condition), path in zip(keys, paths):
            bar.set_description(os.path.basename(path))
            field = generator.field([seed], condition)
            sigma = field.sample_grid(grid, chunk=chunk, progress=bar.update)[0].cpu().numpy()
            with dnnlib.util.atomic_write(path + '.npy', 'wb') as f:
                np.save(f, sigma.astype(np.float32))
            verts, faces = convention.extract(sigma, grid, mesh_convention, level=level)
            mesh.write_ply(path + '.ply', verts, faces)
            if write_mrc:
                mrc.write_mrc(path + '.mrc', sigma, grid, mesh_convention)
    print(f'wrote {len(keys)} x ({", ".join(extensions)}) to {outdir}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
