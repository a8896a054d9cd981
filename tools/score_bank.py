"""Score every sample of a bank with a trained reward model; write id,reward CSV (highest reward = most liked)."""

import click
from tqdm import tqdm

from eg3d_rlhf.cli import (OUT_FILE, bank_scores, check_bank_grid, device_option, force_option, one_line_errors,
    pick_device, refuse_overwrite)
from eg3d_rlhf.data import scores
from eg3d_rlhf.data.bank import Bank, BankError
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, load_reward
from eg3d_rlhf.shards import Ranks, ShardError

#----------------------------------------------------------------------------

@click.command()
@click.option('--reward-model', 'reward_path', required=True, metavar='PT', help='Checkpoint from tools/train_reward.py')
@click.option('--bank', 'bank_dir', required=True, metavar='BANK', help='Sample bank folder')
@click.option('--out', type=OUT_FILE, required=True, metavar='CSV', help='id,reward file to write (atomically; an '
    'existing one only with --force, never an input)')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Samples scored at once')
@click.option('--dry-run', is_flag=True, help='Check the inputs and print the plan; score nothing')
@force_option
@device_option
def main(reward_path, bank_dir, out, batch, dry_run, force, device_name):
    """Write id,reward for every finished sample of BANK, in id order. The checkpoint is read with
    torch.load(weights_only=True), so it cannot run code. The bank's slabs must lie on the grid of the model's input
    spec; the model prepares the raw slabs itself, as its checkpoint says. Under torchrun each process scores its share
    of the batches and rank 0 writes the file, the one a single process writes.

    \b
    python tools/score_bank.py --reward-model reward.pt --bank out/bank --out scores.csv
    torchrun --nproc-per-node 2 tools/score_bank.py --reward-model reward.pt --bank out/bank --out scores.csv
    """
    refuse_overwrite(out, force=force, inputs={'--reward-model': reward_path, '--bank': bank_dir})
    with one_line_errors(ShardError):
        ranks = Ranks()
    device = ranks.device(pick_device(device_name))
    with one_line_errors(RewardCheckpointError, BankError):
        reward = load_reward(reward_path, device)
        bank = Bank(bank_dir)
    check_bank_grid(bank, reward, reward_path)
    with one_line_errors(BankError):
        bank.check_slabs()
    if dry_run:
        print(f'would score {len(bank)} samples of {bank_dir} with the {reward.kind} reward and write {out}')
        return
    chunks = ranks.share_chunks(bank.ids, batch)       # The batches of a one-process run: the same bits.
    where = f' ({ranks.describe()})' if ranks.size > 1 else ''
    with tqdm(total=len(chunks), desc=f'scoring{where}', unit='batch', position=ranks.local) as bar:
        mine = bank_scores(bank, reward, batch=batch, progress=lambda n: bar.update(1), ids=sum(chunks, []))
    shares = ranks.gather(mine)
    ranks.close()
    if not ranks.main:
        return
    result = {i: v for share in shares for i, v in share.items()}
    result = {i: result[i] for i in bank.ids}
    scores.write_scores(out, result)
    best = max(result, key=result.get)
    print(f'{out}: {len(result)} samples scored; highest {best} ({result[best]:.3f}), lowest {min(result, key=result.get)}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
