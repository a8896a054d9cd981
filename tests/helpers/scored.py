"""The `scored` bank (tests/conftest.py): four balls and a tiny sigma reward of their slab; a copy of it to damage, the
tools that score it run on it, and .npy files that are no whole array."""

import shutil

import numpy as np
from click.testing import CliRunner

#----------------------------------------------------------------------------

def scored_bank(root):
    """A bank of four balls on the 40^3 slab under `root` and a tiny sigma reward of that slab."""
    from eg3d_rlhf.data.bank import Bank
    from eg3d_rlhf.rewards.checkpoint import save_reward
    from tests.helpers.banks import ball_bank
    from tests.helpers.rewards import tiny_sigma
    bank, _ = ball_bank(root / 'bank', 4, seed=2)
    reward = str(root / 'reward.pt')
    save_reward(reward, tiny_sigma(seed=7).eval(), 'sigma', Bank(bank).meta('ball00')['slab'])
    return dict(bank=bank, reward=reward, slab=Bank(bank).meta('ball00')['slab'])


def copy_bank(scored, tmp_path):
    return shutil.copytree(scored['bank'], tmp_path / 'bank')


def run_tool(tool, bank, reward, outdir, *extra):
    """tool's command line on a bank and a reward, writing under outdir (score_bank: outdir/scores.csv)."""
    from tools import score_bank, tails
    out = ['--out', str(outdir / 'scores.csv')] if tool is score_bank else ['--outdir', str(outdir)]
    extra = ['--preview-res', '16', *extra] if tool is tails else list(extra)
    return CliRunner().invoke(tool.main, ['--device', 'cpu', '--bank', str(bank), '--reward-model', str(reward), *out,
        *extra])

#----------------------------------------------------------------------------
# Array files: a slab or a region volume that is an .npz, or whose header claims more than the file holds.

def write_npy(path, case):
    """A file at `path` that is not a usable .npy: an .npz archive, a header claiming 3.5 PiB, or truncated data."""
    if case == 'npz':
        with open(path, 'wb') as f:
            np.savez(f, array=np.zeros([20, 22, 20], dtype=np.float32))
        return
    shape = (1 << 17, 1 << 17, 1 << 16) if case == 'huge' else (20, 22, 20)
    with open(path, 'wb') as f:
        np.lib.format.write_array_header_1_0(f, dict(descr='<f4', fortran_order=False, shape=shape))
        f.write(b'\0' * 1000)

NPY = {
    'npz': 'a .npz archive, not a .npy array',
    'huge': 'its header says [131072, 131072, 65536] float32 (4 PiB), but the file holds 1000 bytes of data',
    'truncated': 'its header says [20, 22, 20] float32 (34.4 KiB), but the file holds 1000 bytes of data',
}

#----------------------------------------------------------------------------
