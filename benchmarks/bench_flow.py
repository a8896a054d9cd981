"""CPU benchmark of a flow generator: seconds per sample of each stage, hand-off and slab, against the EG3D demo's slab."""

import statistics
import time

import click
import torch

from eg3d_rlhf.cli import BUNDLED, load_generator, network_path
from eg3d_rlhf.generators.flow import VolumeField
from eg3d_rlhf.geometry.sigma import slab_grid

#----------------------------------------------------------------------------

def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def flow_times(G, seeds, condition, grid):
    """{part: [seconds per sample]}: each stage's ODE, each hand-off (decode), the slab read from the last volume,
    and the whole (one id at a time, as FlowGenerator draws)."""
    p = G.pipeline
    times = {}
    with torch.no_grad():
        for seed in seeds:
            cond, context, total = p.condition_tensor(condition, 1), None, 0.0
            for index, stage in enumerate(p.stages):
                t, run = timed(lambda: p.run_stage(index, [seed], cond, context, G.steps, G.sampler))
                times.setdefault(f'stage {index + 1} ({stage.name}): {G.sampler} x {G.steps}', []).append(t)
                d, context = timed(lambda: stage.decode(run.x1, context))
                times.setdefault(f'hand-off {index + 1} (decode)', []).append(d)
                total += t + d
            s, _ = timed(lambda: VolumeField(context, G.cube_length, G.empty_sigma).sample_grid(grid))
            times.setdefault('slab from the volume', []).append(s)
            times.setdefault('end to end', []).append(total + s)
    return times


def eg3d_times(G, seeds, grid):
    """[seconds per sample] of the EG3D adapter's slab: latents, planes and sigma on the grid."""
    with torch.no_grad():
        G.field([seeds[0]]).sample_grid(grid)                                # Warm-up.
        return [timed(lambda: G.field([seed]).sample_grid(grid))[0] for seed in seeds]

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', default='bundled-flow', show_default=True, metavar='PT|bundled-flow', help='Flow checkpoint')
@click.option('--eg3d', default='bundled', show_default=True, metavar='PKL|bundled',
    help='EG3D generator whose slab time is the yardstick (a pickle other than the bundled one needs --trust-pickle)')
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust --eg3d: loading a pickle runs code stored in it')
@click.option('--samples', type=click.IntRange(min=1), default=4, show_default=True, help='Timed samples of each')
@click.option('--res', 'resolution', type=click.IntRange(min=16), default=128, show_default=True,
    help='Cube resolution whose face slab both generators fill')
@click.option('--condition', type=click.IntRange(min=0), default=0, show_default=True, help='Condition of the flow samples')
@click.option('--threads', type=int, default=None, help='torch.set_num_threads (default: torch chooses)')
def main(network, eg3d, trust_pickle, samples, resolution, condition, threads):
    """Quick run: --samples 1 --res 32 --threads 1"""
    if threads is not None:
        torch.set_num_threads(threads)
    flow = load_generator(network_path(network, False), torch.device('cpu'))
    demo = load_generator(network_path(eg3d, trust_pickle) if eg3d != 'bundled' else BUNDLED, torch.device('cpu'))
    grid = slab_grid(resolution, cube_length=flow.cube_length)
    seeds = list(range(samples + 1))
    print(f'flow: {flow.identity()["network"]}; EG3D: {demo.identity()["network"]}; slab {list(grid.shape)} of the '
        f'{resolution}^3 cube; CPU, {torch.get_num_threads()} threads; median of {samples} samples after one warm-up')
    eg3d_seconds = statistics.median(eg3d_times(demo, seeds[1:], grid))
    flow_seconds = {k: statistics.median(v[1:]) for k, v in flow_times(flow, seeds, condition, grid).items()}
    width = max(map(len, flow_seconds))
    for part, seconds in flow_seconds.items():
        print(f'  flow {part:<{width}}  {seconds:8.3f} s/sample   x{seconds / eg3d_seconds:6.2f} of EG3D')
    print(f'  EG3D demo slab{" " * (width - 9)}  {eg3d_seconds:8.3f} s/sample   x{1:6.2f}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
