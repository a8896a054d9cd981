"""Reward guidance without fine-tuning: sweep the guidance scale and compare each against the unguided samples."""

import os

import click

from eg3d_rlhf.cli import (NETWORK_HELP, OUT_DIR, FiniteList, FiniteRange, conditions_option, device_option, load_generator,
    network_keys, network_path, one_line_errors, open_reward, parse_range, pick_device)
from eg3d_rlhf.data import annotators
from eg3d_rlhf.guidance import flow_guidance, inversion
from eg3d_rlhf.guidance.sweep import editing_sweep, sampling_sweep

#----------------------------------------------------------------------------

def common_options(func):
    """The report's options: reward, seeds, annotator, outdir, dry run, device."""
    for option in reversed([
        click.option('--reward-model', 'reward_path', required=True, metavar='PT', help='Reward checkpoint that guides and scores'),
        click.option('--seeds', type=parse_range, default='1000-1099', show_default=True, metavar='LIST',
            help='Seeds (never the reward model\'s training seeds)'),
        click.option('--annotator', default='oracle:nose', show_default=True, metavar='oracle:NAME|none',
            help='Simulated annotator judging guided vs unguided per sample'),
        click.option('--temperature', type=FiniteRange(min=0), default=0.5, show_default=True, help="The annotator's noise"),
        click.option('--res', 'resolution', type=click.IntRange(min=16), default=128, show_default=True,
            help='Cube resolution of the slabs the annotator judges and the strip shows'),
        click.option('--outdir', type=OUT_DIR, required=True, metavar='REPORT',
            help='Report folder (report.html/.json, PNGs, one folder per swept value)'),
        click.option('--dry-run', is_flag=True, help='Check the inputs and print the plan; draw nothing'),
        device_option]):
        func = option(func)
    return func


def open_inputs(network, trust_pickle, seeds, conditions, capability, annotator, reward_path, device_name, dry_run, plan):
    """(generator, reward, its file, the annotator's taste) of a generator whose family has the capability the guidance
    needs; generator None after printing plan(path, keys) in a dry run. One-line errors otherwise."""
    try:
        taste = None if annotator.lower() == 'none' else annotators.parse_annotator(annotator)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--annotator')
    path = network_path(network, trust_pickle, capability)
    keys = network_keys(path, seeds, conditions)
    device = pick_device(device_name)
    reward = open_reward(reward_path, device)
    if dry_run:
        print(plan(path, keys))
    return None if dry_run else load_generator(path, device), reward, path, taste


@click.group()
def main():
    """Steer a generator with a reward model at generation time, without fine-tuning it: sweep the guidance scale (or
    the editing lr) and report, per value, the reward change, a simulated annotator's win rate against the unguided
    samples (exact binomial p, Wilson 95% interval), PSNR/SSIM against the unguided renders, and a strip of geometry
    previews where reward hacking shows. `flow` guides the sampling of generators with the registry's 'guidance'
    capability (flow checkpoints), `eg3d` edits the latents of those with 'latents' (EG3D pickles)."""

#----------------------------------------------------------------------------

@main.command('flow')
@click.option('--network', default='bundled-flow', show_default=True, metavar='PT|bundled-flow', help='Flow checkpoint. ' + NETWORK_HELP)
@click.option('--scales', type=FiniteList(min=0), default='0.02,0.05,0.1', show_default=True, metavar='LIST',
    help='Guidance scales to sweep (0 = unguided)')
@click.option('--mode', type=click.Choice(flow_guidance.MODES), default='cfg', show_default=True,
    help="cfg: PSD-style mixing toward the velocity whose clean estimate climbed the reward; gradient: classifier "
    "guidance through the velocity model (a backward pass per step)")
@click.option('--stage', type=int, default=-1, show_default=True, help='Guided stage (its decode must be differentiable)')
@click.option('--t-start', type=FiniteRange(min=0, max=1), default=0, show_default=True, help='Guidance acts from this t')
@click.option('--t-end', type=FiniteRange(min=0, max=1), default=0.5, show_default=True,
    help='... up to this t (late steps only polish, and there the reward\'s gradient mostly hacks it)')
@click.option('--normalize', type=click.Choice(flow_guidance.NORMS), default='rms', show_default=True,
    help='rms: the reward gradient scaled to unit RMS per sample; none: as it is')
@click.option('--max-rms', type=FiniteRange(min=0, min_open=True), help='With --normalize=none: clip the gradient to this RMS')
@click.option('--smooth', type=FiniteRange(min=0), default=2.0, show_default=True,
    help='Gaussian blur of the gradient over the guided stage\'s voxels (std in voxels; 0 = none)')
@conditions_option
@common_options
def flow(network, scales, mode, stage, t_start, t_end, normalize, max_rms, smooth, conditions, reward_path, seeds, annotator,
        temperature, resolution, outdir, dry_run, device_name):
    """Reward-guided sampling of a flow generator: at every ODE step of the guided stage, its clean estimate is decoded
    to sigma and scored, and the reward's ascent joins the velocity.

    \b
    python tools/guide.py flow --reward-model checkpoints/reward-sigma-flow-nose.safetensors --conditions 0 --outdir out/guide
    """
    guidance = dict(mode=mode, stage=stage, t_start=t_start, t_end=t_end, normalize=normalize, max_rms=max_rms, smooth=smooth)
    try:
        flow_guidance.RewardGuidance(None, **guidance)
    except ValueError as err:
        raise click.UsageError(str(err))
    G, reward, path, taste = open_inputs(network, False, seeds, conditions, 'guidance', annotator, reward_path, device_name,
        dry_run, lambda path, keys: f'would draw {len(keys)} samples of {path} unguided and with {mode} guidance at scales '
        f'{", ".join(f"{s:g}" for s in scales)}, score them with {reward_path}, judge them by {annotator}; report in {outdir}')
    if G is not None:
        with one_line_errors(ValueError):
            sampling_sweep(G, reward, scales, seeds, outdir, guidance, path, reward_path, annotator, taste, temperature,
                resolution, conditions)
        print(f'report: {os.path.join(outdir, "report.html")}')

#----------------------------------------------------------------------------

@main.command('eg3d')
@click.option('--network', default='bundled', show_default=True, metavar='PKL|bundled', help='EG3D network pickle. ' + NETWORK_HELP)
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust the pickle: loading it runs code stored in it')
@click.option('--lrs', type=FiniteList(min=0, min_open=True), default='0.002,0.005,0.01', show_default=True, metavar='LIST',
    help="Adam learning rates of the latents to sweep: with the image term at zero where an edit starts, they set "
    "how far it goes")
@click.option('--weights', type=FiniteList(min=0), default='1', show_default=True, metavar='LIST',
    help="Reward weights against the image MSE (0 = plain inversion of the seed's own render: the sample itself); "
    "sweep them or --lrs, not both")
@click.option('--steps', type=click.IntRange(min=1), default=10, show_default=True, help='Adam steps on the latents per seed')
@click.option('--space', type=click.Choice(inversion.SPACES), default='w', show_default=True,
    help="w: one w per sample (all of G's ws rows alike); w+: every row free (more room, more reward hacking)")
@click.option('--sigma-weight', type=FiniteRange(min=0), default=0, show_default=True,
    help='Weight of the density L1 to the seed\'s own sigma at random slab points')
@click.option('--render-res', type=click.IntRange(min=8), metavar='INT',
    help="Neural rendering resolution of the image term  [default: G's own]")
@common_options
def eg3d(network, trust_pickle, lrs, weights, steps, space, sigma_weight, render_res, reward_path, seeds, annotator,
        temperature, resolution, outdir, dry_run, device_name):
    """Reward-guided latent editing of an EG3D generator: each seed's latents are inverted to reproduce its own frontal
    raw render while the reward of its slab pulls its geometry; the edited sample is then rendered exactly as the
    original (same G, camera, truncation) and compared with it. An edit starts where the image term and its gradient
    are zero, and Adam normalises its steps, so the learning rate and the steps, more than the weight, set its strength:
    the sweep is over --lrs, or over --weights when those are several.

    \b
    python tools/guide.py eg3d --reward-model checkpoints/reward-sigma-nose.safetensors --outdir out/guide-eg3d
    """
    if len(lrs) > 1 and len(weights) > 1:
        raise click.UsageError('sweep --lrs or --weights, not both: give one of them a single value')
    knob, values, fixed = ('weight', weights, dict(lr=lrs[0])) if len(weights) > 1 else ('lr', lrs, dict(reward_weight=weights[0]))
    fixed_text = ', '.join(f'{k.replace("_", " ")} {v:g}' for k, v in fixed.items())
    G, reward, path, taste = open_inputs(network, trust_pickle, seeds, None, 'latents', annotator, reward_path, device_name,
        dry_run, lambda path, keys: f'would invert {len(keys)} seeds of {path} ({steps} {space} steps, {fixed_text}) at '
        f'{knob} {", ".join(f"{v:g}" for v in values)} with {reward_path}, judge them by {annotator}; report in {outdir}')
    if G is not None:
        with one_line_errors(ValueError):
            editing_sweep(G, reward, knob, values, seeds, outdir, dict(fixed, steps=steps, space=space,
                sigma_weight=sigma_weight, resolution=render_res), path, reward_path, annotator, taste, temperature, resolution)
        print(f'report: {os.path.join(outdir, "report.html")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
