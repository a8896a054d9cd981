"""CPU benchmark of the `sigma` reward on the full 128x141x129 slab: forward+backward time and peak memory vs forward."""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import click
import psutil
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from eg3d_rlhf.rewards.sigma_cnn import SigmaReward

#----------------------------------------------------------------------------

def measure(shape, batch, repeats, threads, backward):
    """In a fresh process: median seconds of `repeats` passes, RSS before them and peak RSS (ru_maxrss), in MiB."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SigmaReward()
    x = torch.rand([batch, *shape]) * 100
    before = psutil.Process().memory_info().rss / 2**20
    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            score = model.score(x).sum()
            if backward:
                score.backward()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024              # Linux reports KiB.
    return dict(seconds=statistics.median(times), before_mib=before, peak_mib=peak)


def in_child(shape, batch, repeats, threads, backward):
    cmd = [sys.executable, os.path.abspath(__file__), '--shape', ','.join(map(str, shape)), '--batch', str(batch),
        '--repeats', str(repeats), '--threads', str(threads), '--child', 'backward' if backward else 'forward']
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@click.command()
@click.option('--shape', default='128,141,129', show_default=True, help='Slab shape X,Y,Z')
@click.option('--batch', type=click.IntRange(min=1), default=1, show_default=True, help='Slabs per pass')
@click.option('--repeats', type=click.IntRange(min=1), default=3, show_default=True, help='Passes to time (median)')
@click.option('--threads', type=click.IntRange(min=1), default=2, show_default=True, help='torch CPU threads')
@click.option('--child', type=click.Choice(['forward', 'backward']), hidden=True)
def main(shape, batch, repeats, threads, child):
    """Each mode runs in a fresh process so peak RSS is its own. Baseline: forward without gradients. Measured:
    forward + backward (what reward training does per step)."""
    shape = [int(s) for s in shape.split(',')]
    if child is not None:
        print(json.dumps(measure(shape, batch, repeats, threads, backward=(child == 'backward'))))
        return
    fwd = in_child(shape, batch, repeats, threads, backward=False)
    both = in_child(shape, batch, repeats, threads, backward=True)
    print(f'sigma reward, slab {"x".join(map(str, shape))}, batch {batch}, {threads} threads, median of {repeats} passes')
    print(f'forward only (baseline): {fwd["seconds"]:.2f} s, peak RSS {fwd["peak_mib"]:,.0f} MiB '
        f'({fwd["before_mib"]:,.0f} MiB before the passes)')
    print(f'forward + backward: {both["seconds"]:.2f} s ({both["seconds"] / fwd["seconds"]:.1f}x the baseline), '
        f'peak RSS {both["peak_mib"]:,.0f} MiB ({both["peak_mib"] / fwd["peak_mib"]:.2f}x; target < 4,096 MiB)')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
