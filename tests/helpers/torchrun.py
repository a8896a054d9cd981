"""Tests under torchrun: launching a script as N processes, and the worker processes a launcher started."""

import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A gloo worker thread can abort a rank as it ends (std::terminate of a thread still joinable; seen once, in a rank
# that destroys its group before it exits): a run whose only fault is that abort is run once more.
GLOO_EXIT_ABORT = 'terminate called without an active exception'

#----------------------------------------------------------------------------

def torchrun(script, *args, nproc=2, wait=True):
    """Run `script` (a path) as `nproc` processes under torchrun on one machine, one thread each: the finished run
    (asserting exit code 0), or with wait=False the launcher's Popen in a session of its own."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    argv = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', script, *args]
    if not wait:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and 'Traceback' not in result.stderr.partition(GLOO_EXIT_ABORT)[0] and \
            GLOO_EXIT_ABORT in result.stderr:               # The abort, with no Python error before it.
        result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def worker_pids(launcher):
    """{RANK: pid} of the worker processes torchrun started (its children carrying RANK in their environment);
    launcher: the subprocess.Popen of `python -m torch.distributed.run ...`."""
    found = {}
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == launcher.pid:
            continue
        try:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                env = dict(kv.split(b'=', 1) for kv in f.read().split(b'\0') if b'=' in kv)
            with open(f'/proc/{pid}/stat', encoding='ascii') as f:
                parent = int(f.read().rsplit(')', 1)[1].split()[1])
        except OSError:
            continue
        if parent == launcher.pid and b'RANK' in env and b'TORCHELASTIC_RUN_ID' in env:
            found[int(env[b'RANK'])] = int(pid)
    return found


def kill_rank_when(launcher, path, rank=1, timeout=300):
    """Wait until `path` exists (asserting the launcher still runs), kill -9 worker `rank` of a 2-process launcher,
    and wait for the launcher to end; returns its exit code."""
    deadline, pids = time.time() + timeout, {}
    while not os.path.exists(path):
        assert time.time() < deadline and launcher.poll() is None, launcher.communicate()
        if len(pids) < 2:                               # Found while waiting, so the kill follows `path` at once.
            pids = worker_pids(launcher)
        time.sleep(0.02)
    pids = pids if len(pids) == 2 else worker_pids(launcher)
    assert sorted(pids) == [0, 1], pids
    os.kill(pids[rank], signal.SIGKILL)
    launcher.communicate(timeout=timeout)
    return launcher.returncode

#----------------------------------------------------------------------------
