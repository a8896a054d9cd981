"""benchmarks/bench_extract.py: which baseline it runs, and a shrunken run of the whole comparison."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, load_golden

SCRIPT = os.path.join(REPO, 'benchmarks', 'bench_extract.py')


def run(*args, cwd=REPO):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=cwd, timeout=900,
        check=False, env=dict(os.environ, PYTHONPATH=REPO))


def test_eg3d_must_be_a_checkout_of_nvlabs_eg3d(tmp_path):
    """--eg3d names the checkout whose gen_samples.py path is the baseline; any other folder is refused in one line
    before anything is built."""
    out = run('--eg3d', str(tmp_path))
    assert out.returncode == 1 and out.stdout == ''
    assert out.stderr.strip().splitlines() == [
        f'Error: {tmp_path}: no gen_samples.py there or in its eg3d/ folder (a checkout of NVlabs/eg3d)']


@pytest.mark.slow
def test_quick_run_names_its_baseline_and_compares_the_cubes(tmp_path):
    from training import legacy
    from training.triplane import TriPlaneGenerator
    gold = load_golden('golden_ffhq512_small.pt')
    G = TriPlaneGenerator(**gold['G_init_kwargs'])
    G.load_state_dict(gold['G_state'], strict=True)
    pkl = str(tmp_path / 'tiny.pkl')
    legacy.save_network_pkl(pkl, dict(G=G.eval().requires_grad_(False), G_ema=G, D=None))
    out = run('--network', pkl, '--res', '16', '--runs', '2')
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "baseline: gen_samples path (this repository's re-implementation)"
    for i in (1, 2):
        assert re.fullmatch(rf'run {i}: extract_sigma [\d.]+ s, baseline [\d.]+ s \([\d.]+x\)', lines[i]), lines[i]
    assert re.fullmatch(r"median of 2, 16\^3, whole process: extract_sigma [\d.]+ s, baseline [\d.]+ s \([\d.]+x; "
        r"median of the runs' own ratios [\d.]+x\)", lines[3]), lines[3]
    m = re.fullmatch(r'largest difference inside the border: ([\d.e+-]+) of the largest \|sigma\|', lines[4])
    assert m and float(m.group(1)) < 1e-4, lines[4]
