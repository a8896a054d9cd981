"""One command on a CUDA machine: NVIDIA's kernels built, tests/test_gpu.py, bench_gpu.py, the main job and a reward step."""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

import click

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from gen_samples_sigma import eg3d_root # pylint: disable=wrong-import-position  (run as a script: its folder is on sys.path)

#----------------------------------------------------------------------------
# The steps run one after the other (each alone on the GPU, so its timings are its own), except NVIDIA's kernel build,
# which compiles on the CPUs while tests/test_gpu.py runs. Each step stops at its cap or at what is left of --budget;
# a step that fails or stops does not stop the ones after it. Full outputs go to --logdir; the console gets each step's
# last lines, so the whole report fits a screen.
#
# NVIDIA's ops compile with torch.utils.cpp_extension and nvcc, in this python unless --nv-python names another venv's.
# Their loader imports each plugin by name after building it, which pybind11 3 extensions do not allow;
# register_loaded_plugins (gen_samples_sigma.py) makes that import work without changing their files. So they build
# and load with torch 2.11 / CUDA 13 (nvcc 13.0, gcc 13.3; 17-43 s each on 16 cores). If a build fails, its error is
# printed as the reason and the other steps still run.

MIN_STEP = 10                   # Seconds a step needs at least; with less of the budget left it is skipped.

PACKAGES = ('click', 'numpy', 'scipy', 'mcubes', 'mrcfile', 'yaml', 'safetensors', 'PIL', 'tqdm', 'psutil', 'triton',
    'pytest')

NV_BUILD = r'''
import sys, time, traceback
import torch, torch.utils.cpp_extension
sys.path[:0] = [sys.argv[1], 'benchmarks']     # NVIDIA's torch_utils before ours (the working folder is ours).
from gen_samples_sigma import register_loaded_plugins
register_loaded_plugins()
from torch_utils import custom_ops
assert custom_ops.__file__.startswith(sys.argv[1]), custom_ops.__file__
from torch_utils.ops import bias_act, filtered_lrelu, upfirdn2d
custom_ops.verbosity = 'full'
print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, CUDA_HOME {torch.utils.cpp_extension.CUDA_HOME}', flush=True)
for op in (bias_act, upfirdn2d, filtered_lrelu):
    start = time.time()
    try:
        op._init()
    except Exception as err:
        traceback.print_exc()
        print(f'NOT BUILT {op.__name__}: {type(err).__name__}: {" ".join(str(err).split())[:300]}', flush=True)
        sys.exit(1)
    print(f'built {op.__name__} in {time.time() - start:.0f} s', flush=True)
'''


class Steps:
    """Runs commands under a shared deadline; logs each to a file, echoes its last lines and keeps a summary."""

    def __init__(self, budget, logdir, tail):
        self.deadline, self.logdir, self.tail = time.monotonic() + budget, logdir, tail
        self.summary = []
        os.makedirs(logdir, exist_ok=True)

    def left(self, cap):
        return max(0, min(cap, self.deadline - time.monotonic()))

    def start(self, name, cmd, env=None):
        """A step in the background: (name, Popen, log path, start time)."""
        log = os.path.join(self.logdir, name.replace(' ', '_') + '.log')
        with open(log, 'w', encoding='utf-8') as f:
            proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, **(env or {})), stdout=f, stderr=subprocess.STDOUT)
        return name, proc, log, time.monotonic()

    def finish(self, step, cap, lines=None):
        """Wait for a started step (at most its share of the time left); echo its last lines; True when it passed."""
        name, proc, log, began = step
        try:
            proc.wait(timeout=self.left(cap - (time.monotonic() - began)))
            status = 'ok' if proc.returncode == 0 else f'failed (exit {proc.returncode})'
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            status = 'stopped (time)'
        seconds = time.monotonic() - began
        with open(log, encoding='utf-8', errors='replace') as f:
            out = f.read().replace('\r', '\n').splitlines()
        shown = [line for line in out if line.strip()][-(lines or self.tail):]
        print(f'== {name}: {status}, {seconds:.0f} s (log: {os.path.relpath(log, REPO)})')
        print('\n'.join('   ' + line[:160] for line in shown), flush=True)
        self.summary.append((name, status, seconds))
        return status == 'ok', out

    def run(self, name, cmd, cap, env=None, lines=None):
        if self.left(cap) < MIN_STEP:
            print(f'== {name}: skipped (no time left of the budget)')
            self.summary.append((name, 'skipped (time)', 0))
            return False, []
        step = self.start(name, cmd, env)
        return self.finish(step, cap, lines)


def environment(py):
    """One line: the GPU, torch, CUDA, triton, nvcc and any package this repository needs that is missing."""
    import torch # pylint: disable=import-outside-toplevel
    triton = importlib.util.find_spec('triton') and importlib.import_module('triton').__version__
    nvcc = shutil.which('nvcc')
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    from eg3d_rlhf.cli import ffhq512_spec_path # pylint: disable=import-outside-toplevel
    spec = ffhq512_spec_path()
    print(f'{torch.cuda.get_device_name(0)}; {py} {sys.version.split()[0]}, torch {torch.__version__} (CUDA '
        f'{torch.version.cuda}), triton {triton or "missing"}, nvcc {nvcc or "not on PATH"}'
        + (f'; missing packages: {", ".join(missing)} (pip install -e .[gpu] beforehand: no registry from here)'
        if missing else '') + ('' if os.path.isfile(spec) else f'; {spec} missing: bench_gpu and the reward step '
        'need it (set EG3D_RLHF_SHARED to a folder holding eg3d_reference/)'), flush=True)


def plan(checkout, nv_python):
    """[(name, command, cap seconds, extra environment)] in order; 'nvidia build' runs in the background."""
    py = sys.executable
    steps = []
    if checkout:
        steps.append(('nvidia build', [nv_python or py, '-c', NV_BUILD, eg3d_root(checkout)], 300, {}))
    steps += [
        ('test_gpu', [py, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests/test_gpu.py'], 220,
            {'TRITON_INTERPRET': '0'}),
        ('bench_gpu', [py, 'benchmarks/bench_gpu.py', '--repeats', '5'] + (['--eg3d', checkout] if checkout else []), 150,
            {}),
        ('main job', [py, 'train.py', '--reward=sigma', '--lambda-r=10', '--device=cuda'], 240, {}),
        ('reward step', [py, 'benchmarks/bench_published_step.py', '--device', 'cuda'], 90, {}),
    ]
    return steps


@click.command()
@click.option('--eg3d', 'checkout', type=click.Path(exists=True, file_okay=False), envvar='EG3D_CHECKOUT',
    help="A checkout of NVlabs/eg3d (kept outside git): builds NVIDIA's kernels and adds them as bench_gpu's column")
@click.option('--nv-python', type=click.Path(exists=True, dir_okay=False), envvar='NV_PYTHON',
    help="Python of a venv whose torch NVIDIA's ops build with (default: this python)")
@click.option('--budget', type=click.IntRange(min=60), default=470, show_default=True, help='Seconds for all the steps')
@click.option('--logdir', default=lambda: os.environ.get('OUT') or tempfile.mkdtemp(prefix='gpu_check_'),
    help='Full output of each step  [default: $OUT, else a new temporary folder]')
@click.option('--dry-run', is_flag=True, help='Print the steps and stop (no GPU needed)')
def main(checkout, nv_python, budget, logdir, dry_run):
    """Build NVIDIA's CUDA kernels (with --eg3d), run tests/test_gpu.py, benchmarks/bench_gpu.py (NVIDIA's kernels as
    a column where they built in this python), the main job on CUDA to its end and one reward-phase step on the
    published slab; print each step's last lines and a summary. Without a CUDA device it refuses in one line."""
    steps = plan(checkout, nv_python)
    if dry_run:
        for name, cmd, cap, env in steps:
            print(f'{name} ({cap} s at most): {" ".join(f"{k}={v}" for k, v in env.items())}{" " if env else ""}'
                f'{" ".join(cmd if name != "nvidia build" else cmd[:2] + ["<build NVIDIA ops>"] + cmd[3:])}')
        return
    import torch # pylint: disable=import-outside-toplevel
    if not torch.cuda.is_available():
        raise click.ClickException('no CUDA device (torch.cuda.is_available() is False): gpu_check.py runs the GPU '
            'checks; run it on a machine with an NVIDIA GPU')
    environment(sys.executable)
    run = Steps(budget, logdir, tail=12)
    build = None
    if checkout:
        name, cmd, cap, env = steps.pop(0)
        build = (run.start(name, cmd, env), cap)
    else:
        print('NVIDIA kernels: not built (no --eg3d checkout given)', flush=True)
    for name, cmd, cap, env in steps:
        if name == 'bench_gpu' and build is not None:
            built, out = run.finish(*build, lines=6)
            reason = next((line for line in out if line.startswith('NOT BUILT')), 'see its log')
            print(f'NVIDIA kernels: {"built" if built else "not built (" + reason + ")"}', flush=True)
            if not built or nv_python:
                cmd = cmd[:-2]                          # No NVIDIA column in this python.
            if built and nv_python:                     # Built in the other venv: its per-op rows there.
                run.run('bench_gpu nvidia venv', [nv_python, 'benchmarks/bench_gpu.py', '--repeats', '5', '--eg3d',
                    checkout, '--skip-end-to-end'], 120, lines=14)
        run.run(name, cmd, cap, env, lines=20 if name in ('bench_gpu', 'main job') else None)
    print('== summary')
    for name, status, seconds in run.summary:
        print(f'   {name:<22} {status:<22} {seconds:6.0f} s')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
