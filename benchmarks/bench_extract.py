"""Whole-process benchmark: tools/extract_sigma.py against EG3D's gen_samples sigma path on one FFHQ-512 pickle."""

import os
import statistics
import subprocess
import sys
import tempfile
import time

import click
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#----------------------------------------------------------------------------
# Both commands are timed from outside, start-up included, as a user would wait for them: ours is
# `tools/extract_sigma.py --res N --exact-grid --mrc` (raw sigma .npy, the mesh .ply and the .mrc), the baseline
# benchmarks/gen_samples_sigma.py (the .mrc alone) with EG3D_RLHF_CUSTOM_OPS=0, as NVIDIA's code runs on a CPU. They
# run in turn, ours then the baseline, so a drift of the machine's speed hits both; a warm-up of each comes first (the
# compiled ops and the pickle's pages). Both cubes are compared at the end: the same grid, the baseline's flip undone
# and its border left out.

def build_pickle(path):
    """An FFHQ-512-structure network pickle (random weights, eg3d_reference's param spec) at `path`."""
    from eg3d_rlhf import cli # pylint: disable=import-outside-toplevel
    from training import legacy # pylint: disable=import-outside-toplevel
    G = cli.ffhq512_structure().eval().requires_grad_(False)
    legacy.save_network_pkl(path, dict(G=G, G_ema=G, D=None, augment_pipe=None, training_set_kwargs=None))


def run(cmd, env=None):
    """Seconds the command took as a whole process; raises with its output when it fails."""
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise click.ClickException(f'{" ".join(cmd)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}')
    return seconds


@click.command()
@click.option('--network', 'network_pkl', help='An FFHQ-512-structure pickle (default: one built with random weights)')
@click.option('--res', type=click.IntRange(min=16), default=128, show_default=True, help='Points per cube axis')
@click.option('--runs', type=click.IntRange(min=1), default=3, show_default=True, help='Timed runs of each command')
def main(network_pkl, res, runs):
    """Print each run's seconds, the medians and their ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        if network_pkl is None:
            network_pkl = os.path.join(tmp, 'ffhq512-random.pkl')
            build_pickle(network_pkl)
        ours = [sys.executable, 'tools/extract_sigma.py', '--network', network_pkl, '--trust-pickle', '--seeds', '0',
            '--res', str(res), '--exact-grid', '--mrc', '--outdir', os.path.join(tmp, 'ours'), '--force']
        theirs = [sys.executable, 'benchmarks/gen_samples_sigma.py', '--network', network_pkl, '--seed', '0',
            '--res', str(res), '--outdir', os.path.join(tmp, 'theirs')]
        env = dict(os.environ, EG3D_RLHF_CUSTOM_OPS='0', PYTHONPATH=REPO)
        run(ours), run(theirs, env)                                                 # Warm-up.
        times = dict(ours=[], theirs=[])
        for i in range(runs):
            times['ours'].append(run(ours))
            times['theirs'].append(run(theirs, env))
            print(f'run {i + 1}: extract_sigma {times["ours"][-1]:.2f} s, gen_samples path {times["theirs"][-1]:.2f} s '
                f'({times["theirs"][-1] / times["ours"][-1]:.2f}x)')
        mine, base = statistics.median(times['ours']), statistics.median(times['theirs'])
        paired = statistics.median(b / a for a, b in zip(times['ours'], times['theirs']))
        print(f'median of {runs}, {res}^3, whole process: extract_sigma {mine:.2f} s, gen_samples path {base:.2f} s '
            f'({base / mine:.2f}x; median of the runs\' own ratios {paired:.2f}x)')
        import mrcfile # pylint: disable=import-outside-toplevel
        a = np.load(os.path.join(tmp, 'ours', 'seed000000.npy'))
        with mrcfile.open(os.path.join(tmp, 'theirs', '0.mrc')) as m:
            b = np.flip(np.asarray(m.data), 0)
        pad = int(30 * res / 256)
        inner = (slice(pad, res - pad),) * 3
        scale = np.abs(b[inner]).max()
        print(f'largest difference inside the border: {np.abs(a[inner] - b[inner]).max() / scale:.2e} of the largest |sigma|')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
