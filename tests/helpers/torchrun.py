"""Tests under torchrun: the worker processes a launcher started, found by their environment."""

import os

#----------------------------------------------------------------------------

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

#----------------------------------------------------------------------------
