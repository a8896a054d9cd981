"""benchmarks/gpu_check.py: the steps it runs on a CUDA machine, and its one-line refusal without one."""

import importlib.util
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
    assert lines[0].startswith('nvidia build (300 s at most): ')
    assert lines[0].endswith(f'-c <build NVIDIA ops> {checkout}')       # Its torch_utils first on the build's path.
    assert lines[2].endswith(f'benchmarks/bench_gpu.py --repeats 5 --eg3d {tmp_path / "eg3d"}')


def test_steps_log_fail_stop_and_skip_without_stopping_the_rest(tmp_path, monkeypatch, capsys):
    """Each step's whole output goes to its log and its last lines to the console; one that fails or runs past its cap
    (killed) does not stop the next; with the budget spent the rest are skipped; the summary lists them all."""
    monkeypatch.syspath_prepend(os.path.dirname(SCRIPT))        # As when it runs as a script.
    spec = importlib.util.spec_from_file_location('gpu_check', SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    monkeypatch.setattr(gpu_check, 'MIN_STEP', 0.5)
    steps = gpu_check.Steps(budget=4, logdir=str(tmp_path), tail=2)
    py = sys.executable
    assert steps.run('count', [py, '-c', 'print(*range(5), sep="\\n")'], cap=60)[0]
    assert not steps.run('fail', [py, '-c', 'import sys; print("bad"); sys.exit(3)'], cap=60)[0]
    assert not steps.run('slow', [py, '-c', 'import time; print("started", flush=True); time.sleep(60)'], cap=1)[0]
    while steps.left(60) >= 0.5:
        steps.run('sleep', [py, '-c', 'import time; time.sleep(60)'], cap=60)
    assert not steps.run('late', [py, '-c', 'print(1)'], cap=60)[0]
    assert [(name, status) for name, status, _ in steps.summary][:3] + [steps.summary[-1][:2]] == [
        ('count', 'ok'), ('fail', 'failed (exit 3)'), ('slow', 'stopped (time)'), ('late', 'skipped (time)')]
    assert (tmp_path / 'count.log').read_text() == '0\n1\n2\n3\n4\n' and (tmp_path / 'slow.log').read_text() == 'started\n'
    out = capsys.readouterr().out
    assert '== count: ok' in out and '   3\n   4\n' in out and '   0\n' not in out and '== late: skipped' in out


def test_plugins_that_load_are_registered_for_nvidias_import_by_name(monkeypatch):
    """NVIDIA's get_plugin imports a plugin by name right after load() built it; the wrapper makes that import find
    the module load() returned (pybind11 3 extensions are not registered by loading), once, however often applied."""
    import types # pylint: disable=import-outside-toplevel
    import torch.utils.cpp_extension as cpp_extension # pylint: disable=import-outside-toplevel
    sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
    try:
        from gen_samples_sigma import register_loaded_plugins # pylint: disable=import-outside-toplevel
    finally:
        sys.path.remove(os.path.join(REPO, 'benchmarks'))
    built = types.ModuleType('fake_gpu_check_plugin')
    calls = []
    monkeypatch.setattr(cpp_extension, 'load', lambda **kwargs: calls.append(kwargs) or built)
    monkeypatch.delitem(sys.modules, 'fake_gpu_check_plugin', raising=False)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module('fake_gpu_check_plugin')
    register_loaded_plugins()
    register_loaded_plugins()
    assert cpp_extension.load(name='fake_gpu_check_plugin', sources=[]) is built
    assert importlib.import_module('fake_gpu_check_plugin') is built and len(calls) == 1
    monkeypatch.delitem(sys.modules, 'fake_gpu_check_plugin')
