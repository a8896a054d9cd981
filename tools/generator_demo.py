"""Demo of a generator (the bundled EG3D one by default): render a view (and EG3D's depth), sample the sigma slab, mesh it."""

import json
import os

import click
import torch

from eg3d_rlhf.analysis.generator_demo import report
from eg3d_rlhf.cli import (SEED, FINITE, NETWORK_HELP, OUT_DIR, all_or_nothing, force_option, load_generator, network_path,
    outermost_new_folder, refuse_outdir)
from eg3d_rlhf.generators.eg3d import EG3DGenerator

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
@force_option
def main(outdir, network_pkl, trust_pickle, seed, condition, resolution, neural_res, level, dry_run, force):
    """Render one face (image; EG3D also the raw image and depth), sample its sigma slab and mesh it; write PNGs,
    .npy, .ply, summary.json and report.html/.json (eg3d_rlhf/analysis/generator_demo.py).

    Also previews.png: the level surface of the full cube from the front, three-quarter and profile. With
    --network random the weights are random: the pipeline runs end to end, but the images and geometry are noise.
    OUTDIR must be new or empty (--force: write over what it holds) and never inside a sample bank.
    """
    refuse_outdir(outdir, force)
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
    with all_or_nothing(outdir, outermost_new_folder(os.path.join(outdir, 'x'))):     # A full disk: one line, no half.
        summary = report(generator, seed, condition, outdir, resolution=resolution, level=level, neural_res=neural_res,
            network=source)
    print(json.dumps(summary))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
