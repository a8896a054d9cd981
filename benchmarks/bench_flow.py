"""CPU benchmark of a flow generator: one id a pass against batch-invariant passes, per stage, slab and bank sample."""

import contextlib
import os
import statistics
import tempfile
import time

import click
import torch

from eg3d_rlhf.cli import BUNDLED, load_generator, network_path
from eg3d_rlhf.data.bank import BankWriter
from eg3d_rlhf.generators.flow import VolumeField
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.geometry.sigma import slab_grid

#----------------------------------------------------------------------------
# The two paths, timed alternately in one process: old (one id a plain pass, as FlowGenerator draws by default, and
# previews that march every step) and new (`batch` ids a batch-invariant pass, previews that skip empty space).

def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def pass_times(G, seeds, condition, grid):
    """{part: seconds per sample} of one pipeline pass over seeds, as G draws it (plain or batch-invariant): each
    stage's ODE, each hand-off (decode), the slab of each sample read from the last volume (one at a time, as a bank
    reads it), and their sum."""
    p, n, times = G.pipeline, len(seeds), {}
    with torch.no_grad(), G.pass_context():
        cond, context = p.condition_tensor(condition, n), None
        for index, stage in enumerate(p.stages):
            t, run = timed(lambda: p.run_stage(index, seeds, cond, context, G.steps, G.sampler))
            times[f'stage {index + 1} ({stage.name}): {G.sampler} x {G.steps}'] = t / n
            d, context = timed(lambda: stage.decode(run.x1, context))
            times[f'hand-off {index + 1} (decode)'] = d / n
        field = lambda k: VolumeField(context[k : k + 1], G.cube_length, G.empty_sigma)
        times['slab from the volume'] = sum(timed(lambda: field(k).sample_grid(grid))[0] for k in range(n)) / n
    times['end to end (draw and slab)'] = sum(times.values())
    return times


def bank_time(G, writer, seeds, condition, every_step):
    """Seconds per sample of writing seeds into a bank as tools/sample_bank.py does (one pass, then each id's files)."""
    with preview.every_step() if every_step else contextlib.nullcontext():
        return timed(lambda: list(writer.write_pass(seeds, condition)))[0] / len(seeds)


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
@click.option('--samples', type=click.IntRange(min=1), default=4, show_default=True,
    help='Timed repeats of each path (old: one id, new: one pass of --batch ids), after one warm-up')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Ids a pass of the new path')
@click.option('--res', 'resolution', type=click.IntRange(min=16), default=128, show_default=True,
    help='Cube resolution whose face slab both generators fill')
@click.option('--preview-res', type=click.IntRange(min=16), default=192, show_default=True, help='Bank preview size')
@click.option('--condition', type=click.IntRange(min=0), default=0, show_default=True, help='Condition of the flow samples')
@click.option('--threads', type=int, default=None, help='torch.set_num_threads (default: torch chooses)')
def main(network, eg3d, trust_pickle, samples, batch, resolution, preview_res, condition, threads):
    """Quick run: --samples 1 --batch 2 --res 32 --preview-res 16 --threads 1"""
    if threads is not None:
        torch.set_num_threads(threads)
    path = network_path(network, False)
    old, new = load_generator(path, 'cpu'), load_generator(path, 'cpu', draw_batch=batch, invariant=True)
    demo = load_generator(network_path(eg3d, trust_pickle) if eg3d != 'bundled' else BUNDLED, torch.device('cpu'))
    grid = slab_grid(resolution, cube_length=old.cube_length)
    print(f'flow: {old.identity()["network"]}; EG3D: {demo.identity()["network"]}; slab {list(grid.shape)} of the '
        f'{resolution}^3 cube; CPU, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the '
        f'start; median of {samples} repeats after one warm-up, old and new alternating')
    parts, banks = {'old': [], 'new': []}, {'old': [], 'new': []}
    with tempfile.TemporaryDirectory() as tmp:
        writers = {k: BankWriter(os.path.join(tmp, k), G, resolution, preview_res=preview_res) for k, G in
            (('old', old), ('new', new))}
        for writer in writers.values():
            writer.open()
        fresh = lambda seeds: [s + 100_000 for s in seeds]     # Seeds not drawn yet (kept draws would be free).
        for r in range(samples + 1):                            # Repeat 0 warms up; each repeat draws new seeds.
            alone, batched = [10_000 + r], list(range(20_000 + r * batch, 20_000 + (r + 1) * batch))
            parts['old'].append(pass_times(old, alone, condition, grid))
            parts['new'].append(pass_times(new, batched, condition, grid))
            banks['old'].append(bank_time(old, writers['old'], fresh(alone), condition, every_step=True))
            banks['new'].append(bank_time(new, writers['new'], fresh(batched), condition, every_step=False))
    eg3d_seconds = statistics.median(eg3d_times(demo, list(range(1, samples + 1)), grid))
    median = lambda rows, part: statistics.median(row[part] for row in rows[1:])
    width = max(map(len, parts['old'][0])) + 5
    print(f'  {"part":<{width}}  {"old: one id a pass":>19}  {f"new: {batch} ids a pass":>19}  old/new')
    for part in parts['old'][0]:
        o, n = median(parts['old'], part), median(parts['new'], part)
        print(f'  flow {part:<{width - 5}}  {o:10.3f} s/sample  {n:10.3f} s/sample  {o / max(n, 1e-9):6.2f}x')
    o, n = (statistics.median(banks[k][1:]) for k in ('old', 'new'))
    print(f'  {"bank sample":<{width}}  {o:10.3f} s/sample  {n:10.3f} s/sample  {o / n:6.2f}x  (tools/sample_bank.py: '
        f'draw, picture, slab, previews of {preview_res} px (old: every step), files)')
    o, n = (median(parts[k], 'end to end (draw and slab)') / eg3d_seconds for k in ('old', 'new'))
    print(f'  EG3D demo slab {eg3d_seconds:.3f} s/sample: flow end to end x{o:.2f} (old), x{n:.2f} (new) of it')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
