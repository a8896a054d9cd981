"""CPU benchmark of the `sigma` reward on the full 128x141x129 slab: the default (levels) against the learned CNN trunk."""

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

from eg3d_rlhf.rewards import fitting, linear_heads
from eg3d_rlhf.rewards.sigma_cnn import SigmaReward

TRUNKS = {'levels': dict(), 'cnn': dict(trunk='cnn', members=1, hidden=512)}   # The default, and the CNN before it.

#----------------------------------------------------------------------------

def measure(trunk, shape, batch, repeats, threads, mode):
    """In a fresh process: median seconds of `repeats` passes (forward, forward + backward to the slab and weights, or
    solving the linear heads of a demo-sized fit), RSS before them and peak RSS (ru_maxrss), in MiB."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SigmaReward(**TRUNKS[trunk])
    x = head_like(batch, shape)
    before = psutil.Process().memory_info().rss / 2**20
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if mode == 'solve':
            solve_demo_fit(model)
        else:
            model.zero_grad(set_to_none=True)
            x.grad = None
            with torch.set_grad_enabled(mode == 'backward'):
                score = model.score(x.requires_grad_(mode == 'backward')).sum()
                if mode == 'backward':
                    score.backward()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024              # Linux reports KiB.
    return dict(seconds=statistics.median(times), before_mib=before, peak_mib=peak)


def head_like(batch, shape, seed=0):
    """[batch, *shape] raw-sigma-like slabs: a ball crossing the mesh level (10) at 0.4 of the slab, noise of sd 0.2
    (a quarter voxel of roughness: a mesh the size of a head's; uniform noise would mesh every voxel)."""
    axes = [torch.linspace(-0.5, 0.5, n) for n in shape]
    r = sum(a.square() for a in torch.meshgrid(*axes, indexing='ij')).sqrt()
    noise = torch.randn([batch, *shape], generator=torch.Generator().manual_seed(seed))
    return 30 - 20 * r / 0.4 + 0.2 * noise


def solve_demo_fit(model, samples=1000, pairs=1000, seed=0):
    """fit_linear_heads on random features of `samples` samples (mirrored too) and `pairs` judgements, 10% validation."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn([samples, model.feature_dim], generator=gen, dtype=torch.float64)
    table = linear_heads.FeatureTable({i: i for i in range(samples)}, feats, feats.flip(1))
    drawn = torch.randint(samples, [pairs, 2], generator=gen).tolist()
    drawn = [(a, b) for a, b in drawn if a != b]
    cut = len(drawn) // 10
    linear_heads.fit_linear_heads(model, table, list(range(samples)), drawn[cut:], [], drawn[:cut],
        fitting.FitOptions().l2)


def in_child(trunk, shape, batch, repeats, threads, mode):
    cmd = [sys.executable, os.path.abspath(__file__), '--shape', ','.join(map(str, shape)), '--batch', str(batch),
        '--repeats', str(repeats), '--threads', str(threads), '--child', f'{trunk}:{mode}']
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@click.command()
@click.option('--shape', default='128,141,129', show_default=True, help='Slab shape X,Y,Z')
@click.option('--batch', type=click.IntRange(min=1), default=1, show_default=True, help='Slabs per pass')
@click.option('--repeats', type=click.IntRange(min=1), default=3, show_default=True, help='Passes to time (median)')
@click.option('--threads', type=click.IntRange(min=1), default=2, show_default=True, help='torch CPU threads')
@click.option('--bank', 'bank_size', type=click.IntRange(min=2), default=1000, show_default=True, help='Samples of the demo-sized bank the epoch estimate is for')
@click.option('--judgements', type=click.IntRange(min=1), default=1000, show_default=True, help='Judgements per epoch of the CNN')
@click.option('--child', hidden=True)
def main(shape, batch, repeats, threads, bank_size, judgements, child):
    """Each measurement runs in a fresh process so peak RSS is its own. Baseline: the learned CNN trunk, which trains
    by epochs of forward + backward passes (each judgement's two slabs). Measured: the default levels trunk, whose
    features are computed once per sample and mirror (two forward passes) and whose linear heads are then solved;
    forward + backward is what fine-tuning pays per reward evaluation."""
    shape = [int(s) for s in shape.split(',')]
    if child is not None:
        trunk, mode = child.split(':')
        print(json.dumps(measure(trunk, shape, batch, repeats, threads, mode)))
        return
    r = {(t, m): in_child(t, shape, batch, repeats, threads, m) for t in TRUNKS for m in ('forward', 'backward')}
    solve = in_child('levels', shape, 1, 1, threads, 'solve')
    print(f'sigma reward, slab {"x".join(map(str, shape))}, batch {batch}, {threads} threads, median of {repeats} passes')
    for t in TRUNKS:
        f, b = r[t, 'forward'], r[t, 'backward']
        print(f'{t:>6} trunk: forward {f["seconds"]:.2f} s, peak RSS {f["peak_mib"]:,.0f} MiB; forward + backward '
            f'{b["seconds"]:.2f} s, peak RSS {b["peak_mib"]:,.0f} MiB ({b["before_mib"]:,.0f} MiB before the passes)')
    per = lambda t, m: r[t, m]['seconds'] / batch                    # Seconds per slab.
    cnn_epoch = 2 * judgements * per('cnn', 'backward')
    levels_fit = 2 * bank_size * per('levels', 'forward') + solve['seconds']
    print(f'cnn (baseline) epoch of {judgements} judgements: {cnn_epoch:,.0f} s (2 slabs x forward + backward each)')
    print(f'levels whole fit on a {bank_size}-sample bank: {levels_fit:,.0f} s (features {2 * bank_size * per("levels", "forward"):,.0f} s '
        f'once, heads {solve["seconds"]:.1f} s for 1000 judgements, {solve["peak_mib"]:,.0f} MiB peak); '
        f'{cnn_epoch / levels_fit:.1f}x faster than one CNN epoch')
    print(f'fine-tuning step (forward + backward): levels {per("levels", "backward"):.2f} s vs cnn {per("cnn", "backward"):.2f} s '
        f'per slab ({per("cnn", "backward") / per("levels", "backward"):.1f}x); peak RSS '
        f'{r["levels", "backward"]["peak_mib"] / r["cnn", "backward"]["peak_mib"]:.2f}x (target < 4,096 MiB)')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
