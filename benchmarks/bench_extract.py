"""Whole-process benchmark: tools/extract_sigma.py against EG3D's gen_samples sigma path (NVIDIA's code with --eg3d)."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import click
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from gen_samples_sigma import eg3d_root # pylint: disable=wrong-import-position  (run as a script: its folder is on sys.path)

#----------------------------------------------------------------------------
# Both commands are timed from outside, start-up included, as a user would wait for them: ours is
# `tools/extract_sigma.py --res N --exact-grid --mrc` (raw sigma .npy, the mesh .ply and the .mrc), the baseline
# benchmarks/gen_samples_sigma.py (gen_samples' shape path, the .mrc alone). With --eg3d CHECKOUT the baseline runs
# NVIDIA's own modules from a checkout of NVlabs/eg3d on a pickle of their classes holding the same weights, written
# in a process that imports only their tree (their loader wants D to be a module: an empty one, so neither pickle
# carries a discriminator); without it, this repository's modules under EG3D_RLHF_CUSTOM_OPS=0, as NVIDIA's code runs
# on a CPU (its compiled ops are CUDA-only). They run in turn, ours then the baseline, so a drift of the machine's speed
# hits both; a warm-up of each comes first (the compiled ops and the pickle's pages). Both cubes are compared at the
# end: the same grid, the baseline's flip undone and its border left out.

NVIDIA_PICKLE = """
import json, pickle, sys, torch, training
assert training.__file__.startswith(sys.argv[1]), training.__file__
from training.triplane import TriPlaneGenerator
with open(sys.argv[2]) as f:
    net = json.load(f)
G = TriPlaneGenerator(**net['init_kwargs']).eval().requires_grad_(False)
G.load_state_dict(torch.load(sys.argv[3], weights_only=True), strict=True)
G.neural_rendering_resolution = net['neural_rendering_resolution']
with open(sys.argv[4], 'wb') as f:
    pickle.dump(dict(G=G, D=torch.nn.Module(), G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
"""


def build_pickle(path):
    """An FFHQ-512-structure network pickle (random weights, eg3d_reference's param spec) at `path`."""
    from eg3d_rlhf import cli # pylint: disable=import-outside-toplevel
    from training import legacy # pylint: disable=import-outside-toplevel
    G = cli.ffhq512_structure().eval().requires_grad_(False)
    legacy.save_network_pkl(path, dict(G=G, G_ema=G, D=None, augment_pipe=None, training_set_kwargs=None))


def build_nvidia_pickle(network_pkl, root, path, tmp):
    """The G_ema of `network_pkl` (our loader) as a pickle of NVIDIA's TriPlaneGenerator from the tree at `root`, the
    same weights, written by a process importing only that tree, as their training loop writes snapshots."""
    import torch # pylint: disable=import-outside-toplevel
    from training import legacy # pylint: disable=import-outside-toplevel
    with open(network_pkl, 'rb') as f:
        G = legacy.load_network_pkl(f, trust=True)['G_ema']
    net, state = os.path.join(tmp, 'net.json'), os.path.join(tmp, 'state.pt')
    with open(net, 'w', encoding='utf-8') as f:
        json.dump(dict(init_kwargs=G.init_kwargs, neural_rendering_resolution=G.neural_rendering_resolution), f)
    torch.save(G.state_dict(), state)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    out = subprocess.run([sys.executable, '-c', NVIDIA_PICKLE, root, net, state, path], cwd=tmp, capture_output=True,
        text=True, check=False, env=dict(env, PYTHONPATH=root))
    if out.returncode != 0:
        raise click.ClickException(f'writing the pickle in {root} failed:\n{out.stderr[-2000:]}')
    os.remove(state)


def run(cmd, env=None):
    """Seconds the command took as a whole process; raises with its output when it fails."""
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise click.ClickException(f'{" ".join(cmd)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}')
    return seconds


def baseline(root, network_pkl, res, tmp):
    """(command, environment, name) of the baseline: NVIDIA's modules from the eg3d folder `root` (eg3d_root), else
    our re-implementation."""
    cmd = [sys.executable, 'benchmarks/gen_samples_sigma.py', '--seed', '0', '--res', str(res),
        '--outdir', os.path.join(tmp, 'theirs')]
    if root is None:
        env = dict(os.environ, EG3D_RLHF_CUSTOM_OPS='0', PYTHONPATH=REPO)
        return cmd + ['--network', network_pkl], env, 'gen_samples path (this repository\'s re-implementation)'
    theirs = os.path.join(tmp, 'ffhq512-nvidia.pkl')
    build_nvidia_pickle(network_pkl, root, theirs, tmp)
    env = dict(os.environ, PYTHONPATH=root)                                     # Their modules, not ours.
    return cmd + ['--network', theirs, '--eg3d', root], env, f'NVIDIA\'s gen_samples path ({root})'


@click.command()
@click.option('--network', 'network_pkl', help='An FFHQ-512-structure pickle (default: one built with random weights)')
@click.option('--eg3d', 'checkout', type=click.Path(exists=True, file_okay=False),
    help="A checkout of NVlabs/eg3d: time NVIDIA's own code as the baseline")
@click.option('--res', type=click.IntRange(min=16), default=128, show_default=True, help='Points per cube axis')
@click.option('--runs', type=click.IntRange(min=1), default=3, show_default=True, help='Timed runs of each command')
def main(network_pkl, checkout, res, runs):
    """Print the baseline, each run's seconds, the medians and their ratio."""
    root = eg3d_root(checkout) if checkout else None
    with tempfile.TemporaryDirectory() as tmp:
        if network_pkl is None:
            network_pkl = os.path.join(tmp, 'ffhq512-random.pkl')
            build_pickle(network_pkl)
        ours = [sys.executable, 'tools/extract_sigma.py', '--network', network_pkl, '--trust-pickle', '--seeds', '0',
            '--res', str(res), '--exact-grid', '--mrc', '--outdir', os.path.join(tmp, 'ours'), '--force']
        theirs, env, name = baseline(root, network_pkl, res, tmp)
        print(f'baseline: {name}')
        run(ours), run(theirs, env)                                                 # Warm-up.
        times = dict(ours=[], theirs=[])
        for i in range(runs):
            times['ours'].append(run(ours))
            times['theirs'].append(run(theirs, env))
            print(f'run {i + 1}: extract_sigma {times["ours"][-1]:.2f} s, baseline {times["theirs"][-1]:.2f} s '
                f'({times["theirs"][-1] / times["ours"][-1]:.2f}x)', flush=True)
        mine, base = statistics.median(times['ours']), statistics.median(times['theirs'])
        paired = statistics.median(b / a for a, b in zip(times['ours'], times['theirs']))
        print(f'median of {runs}, {res}^3, whole process: extract_sigma {mine:.2f} s, baseline {base:.2f} s '
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
