"""Score every sample of a bank with a trained reward model; write id,reward CSV (highest reward = most liked)."""

import os
import sys

import click
import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # Run from anywhere.

from eg3d_rlhf.data.bank import Bank, BankError                                          # noqa: E402
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, load_reward         # noqa: E402
from eg3d_rlhf.geometry.sigma import normalise_sigma_self                                    # noqa: E402
from eg3d_rlhf.cli import pick_device, write_scores                               # noqa: E402

#----------------------------------------------------------------------------

def check_grid(info, bank, reward_path, bank_dir):
    """ClickException unless the bank's slabs are on the grid the reward model was trained on."""
    want = info['input']['slab']
    have = bank.meta(bank.ids[0])['slab']
    if list(want['shape']) != list(have['shape']) or want['resolution'] != have['resolution']:
        raise click.ClickException(f'{bank_dir}: slabs of the {have["resolution"]}^3 grid, shape {have["shape"]}, but '
            f'{reward_path} was trained on the {want["resolution"]}^3 grid, shape {want["shape"]}')


def score_samples(model, bank, batch, device):
    """{id: reward} for every sample of the bank, in id order, `batch` self-normalised slabs at a time."""
    scores = {}
    with torch.no_grad():
        for s in tqdm(range(0, len(bank), batch), desc='scoring', unit='batch'):
            ids = bank.ids[s:s + batch]
            x = torch.stack([torch.from_numpy(normalise_sigma_self(bank.slab(i))) for i in ids]).to(device)
            scores.update(zip(ids, model.score(x).cpu().tolist()))
    return scores

#----------------------------------------------------------------------------

@click.command()
@click.option('--reward-model', 'reward_path', required=True, metavar='PT', help='Checkpoint from tools/train_reward.py')
@click.option('--bank', 'bank_dir', required=True, metavar='BANK', help='Sample bank folder')
@click.option('--out', required=True, metavar='CSV', help='id,reward file to write (replaced atomically)')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Samples scored at once')
@click.option('--dry-run', is_flag=True, help='Check the inputs and print the plan; score nothing')
@click.option('--device', 'device_name', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
def main(reward_path, bank_dir, out, batch, dry_run, device_name):
    """Write id,reward for every finished sample of BANK, in id order. The checkpoint is read with
    torch.load(weights_only=True), so it cannot run code. The bank's slabs must match the grid the model was
    trained on.

    \b
    python tools/score_bank.py --reward-model reward.pt --bank out/bank --out scores.csv
    """
    device = pick_device(device_name)
    try:
        model, info = load_reward(reward_path, device)
        bank = Bank(bank_dir)
    except (RewardCheckpointError, BankError) as err:
        raise click.ClickException(str(err))
    check_grid(info, bank, reward_path, bank_dir)
    if dry_run:
        print(f'would score {len(bank)} samples of {bank_dir} with the {info["kind"]} reward and write {out}')
        return
    scores = score_samples(model, bank, batch, device)
    write_scores(out, scores)
    best = max(scores, key=scores.get)
    print(f'{out}: {len(scores)} samples scored; highest {best} ({scores[best]:.3f}), lowest {min(scores, key=scores.get)}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
