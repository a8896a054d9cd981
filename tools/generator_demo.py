"""Demo of a generator (the bundled EG3D one by default): render a view (and EG3D's depth), sample the sigma slab, mesh it."""

import json
import math
import os

import click
import numpy as np
import PIL.Image
import torch

from eg3d_rlhf.cli import SEED, FINITE, NETWORK_HELP, OUT_DIR, load_generator, network_path
from eg3d_rlhf.generators.eg3d import EG3DGenerator
from eg3d_rlhf.geometry import mesh, preview
from eg3d_rlhf.geometry.sigma import CubeGrid, normalise_sigma_self, slab_grid
from training.camera_utils import orbit_camera_label

#----------------------------------------------------------------------------

def ffhq512_small_kwargs():
    """TriPlaneGenerator kwargs of EG3D's FFHQ-512 structure with narrow channels (CPU-sized, ~8 M parameters)."""
    return dict(z_dim=512, c_dim=25, w_dim=512, img_resolution=512, img_channels=3, sr_num_fp16_res=4,
        mapping_kwargs=dict(num_layers=2), channel_base=4096, channel_max=128, fused_modconv_default='inference_only',
        num_fp16_res=0, conv_clamp=None,
        sr_kwargs=dict(channel_base=4096, channel_max=128, fused_modconv_default='inference_only'),
        rendering_kwargs=dict(image_resolution=512, disparity_space_sampling=False, clamp_mode='softplus',
            superresolution_module='training.superresolution.SuperresolutionHybrid8XDC', c_gen_conditioning_zero=False,
            gpc_reg_prob=0.5, c_scale=1.0, superresolution_noise_mode='none', density_reg=0.25,
            density_reg_p_dist=0.004, reg_type='l1', decoder_lr_mul=1.0, sr_antialias=True, depth_resolution=48,
            depth_resolution_importance=48, ray_start=2.25, ray_end=3.3, box_warp=1, avg_camera_radius=2.7,
            avg_camera_pivot=[0, 0, 0.2]))


def to_png(path, image, lo, hi):
    """Save a [C, H, W] tensor scaled from [lo, hi] to 8-bit."""
    x = ((image.float() - lo) / (hi - lo)).clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    PIL.Image.fromarray(x.permute(1, 2, 0).squeeze(-1).numpy()).save(path)


def render_eg3d(generator, seed, neural_res, outdir):
    """image.png, image_raw.png and depth.png of a seed's sample as every tool draws it (generators/eg3d.py), seen
    from a camera turned 0.3 rad to the side."""
    G = generator.G
    c = orbit_camera_label(G.rendering_kwargs, yaw=math.pi / 2 + 0.3)
    with torch.no_grad():
        out = G.synthesis(generator.seed_ws([seed]), c, neural_rendering_resolution=neural_res, noise_mode='const')
    to_png(os.path.join(outdir, 'image.png'), out['image'][0], -1, 1)
    to_png(os.path.join(outdir, 'image_raw.png'), out['image_raw'][0], -1, 1)
    depth = out['image_depth'][0]
    to_png(os.path.join(outdir, 'depth.png'), -depth, -float(depth.max()), -float(depth.min()) + 1e-8)

#----------------------------------------------------------------------------

@click.command()
@click.option('--outdir', type=OUT_DIR, required=True, metavar='DIR', help='Output folder')
@click.option('--network', 'network_pkl', metavar='PKL|PT|bundled|bundled-flow|random', default='bundled', show_default=True,
    help=NETWORK_HELP + '; random = a randomly initialised FFHQ-512 structure')
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust PKL: loading a pickle runs code stored in it')
@click.option('--seed', type=SEED, default=0, show_default=True,
    help='Seed of the sample (and init seed of the random network)')
@click.option('--condition', type=click.IntRange(min=0), help='Condition of a conditional (flow) generator  [default: 0]')
@click.option('--res', 'resolution', type=click.IntRange(min=16), default=64, show_default=True, help='Cube resolution N for the sigma slab')
@click.option('--neural-res', type=click.IntRange(min=8), help='Neural rendering resolution (EG3D)  [default: the network\'s own]')
@click.option('--level', type=FINITE, default=10, show_default=True, help='Marching-cubes iso level of raw sigma')
@click.option('--dry-run', is_flag=True, help='Print what would be done; build and write nothing')
def main(outdir, network_pkl, trust_pickle, seed, condition, resolution, neural_res, level, dry_run):
    """Render one face (image; EG3D also the raw image and depth), sample its sigma slab and mesh it; write PNGs,
    .npy, .ply, summary.json.

    Also previews.png: the level surface of the full cube from the front, three-quarter and profile. With
    --network random the weights are random: the pipeline runs end to end, but the images and geometry are noise.
    """
    if network_pkl == 'random':
        source = f'random FFHQ-512 structure (init seed {seed})'
    else:
        source = network_path(network_pkl, trust_pickle)
    if dry_run:
        print(f'would build {source}, render seed {seed} at neural res {neural_res or "default"}, sample a slab of the '
              f'{resolution}^3 grid and write image.png, (EG3D: image_raw.png, depth.png), sigma_slab.npy, mesh.ply, '
              f'previews.png, summary.json to {outdir}')
        return

    from training.triplane import TriPlaneGenerator
    if network_pkl == 'random':
        torch.manual_seed(seed)
        generator = EG3DGenerator(TriPlaneGenerator(**ffhq512_small_kwargs()).eval().requires_grad_(False))
    else:
        generator = load_generator(source, torch.device('cpu'))
    try:                                            # Condition 0 of a conditional generator unless one is given.
        asked = None if condition is None and generator.conditions is None else [condition or 0]
        ((_, condition),) = generator.keys([seed], asked)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--condition')
    os.makedirs(outdir, exist_ok=True)
    if generator.kind == 'eg3d':
        render_eg3d(generator, seed, neural_res, outdir)
    else:
        preview.save_picture(generator.picture(seed, condition), os.path.join(outdir, 'image.png'))

    field = generator.field([seed], condition)
    grid = slab_grid(resolution, cube_length=generator.cube_length)
    sigma = field.sample_grid(grid)[0].numpy()
    np.save(os.path.join(outdir, 'sigma_slab.npy'), sigma)
    verts, faces = mesh.extract_mesh(sigma, grid, level=level)
    mesh.write_ply(os.path.join(outdir, 'mesh.ply'), verts, faces)
    cube = CubeGrid(resolution, cube_length=generator.cube_length)
    views = preview.render_views(field.sample_grid(cube)[0].numpy(), cube, level=level, resolution=192)
    preview.save_picture(np.concatenate(list(views.values()), axis=1), os.path.join(outdir, 'previews.png'))
    summary = dict(network=source, id=generator.sample_id(seed, condition), seed=seed, slab_shape=list(grid.shape),
        sigma_min=float(sigma.min()), sigma_max=float(sigma.max()), normalised_mean=float(normalise_sigma_self(sigma).mean()),
        mesh_level=level, mesh_vertices=len(verts), mesh_faces=len(faces))
    with open(os.path.join(outdir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
