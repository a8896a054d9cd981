"""benchmarks/gpu_check.py: the steps it runs on a CUDA machine, and its one-line refusal without one."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

SCRIPT = os.path.join(REPO, 'benchmarks', 'gpu_check.py')


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=REPO, timeout=300,
        check=False, env=dict(os.environ, PYTHONPATH=REPO))


@pytest.mark.skipif(torch.cuda.is_available(), reason='a CUDA device is present: the check would run')
def test_refuses_without_cuda_in_one_line(tmp_path):
    out = run('--logdir', str(tmp_path / 'logs'))
    assert out.returncode == 1 and out.stdout == ''
    assert out.stderr.strip().splitlines() == ['Error: no CUDA device (torch.cuda.is_available() is False): '
        'gpu_check.py runs the GPU checks; run it on a machine with an NVIDIA GPU']
    assert not (tmp_path / 'logs').exists()


def test_dry_run_names_each_step_and_the_files_it_runs(tmp_path):
    """The steps the issue asks for, in order, each naming a file of this repository; --eg3d adds NVIDIA's build and
    bench_gpu's column; a folder without gen_samples.py is refused in one line."""
    out = run('--dry-run')
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(' (')[0] for line in lines] == ['test_gpu', 'bench_gpu', 'main job', 'reward step']
    assert 'TRITON_INTERPRET=0 ' in lines[0] and lines[0].endswith('-m pytest -q -p no:cacheprovider tests/test_gpu.py')
    assert lines[2].endswith('train.py --reward=sigma --lambda-r=10 --device=cuda')
    assert lines[3].endswith('benchmarks/bench_published_step.py --device cuda')
    for line in lines:
        assert os.path.isfile(os.path.join(REPO, next(w for w in line.split() if w.endswith('.py'))))
    checkout = tmp_path / 'eg3d' / 'eg3d'
    checkout.mkdir(parents=True)
    assert run('--dry-run', '--eg3d', str(tmp_path / 'eg3d')).stderr.strip().splitlines() == [
        f'Error: {tmp_path / "eg3d"}: no gen_samples.py there or in its eg3d/ folder (a checkout of NVlabs/eg3d)']
    (checkout / 'gen_samples.py').write_text('')
    out = run('--dry-run', '--eg3d', str(tmp_path / 'eg3d'))
    lines = out.stdout.splitlines()
    assert lines[0].startswith('nvidia build (300 s at most): ') and lines[0].endswith(f'<build NVIDIA ops> {checkout}')
    assert lines[2].endswith(f'benchmarks/bench_gpu.py --repeats 5 --eg3d {tmp_path / "eg3d"}')
