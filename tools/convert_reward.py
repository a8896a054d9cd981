"""Write a published reward bundle, or one of our .pt reward checkpoints, as a reward checkpoint (safetensors or .pt)."""

import click

from eg3d_rlhf.cli import OUT_FILE, force_option, open_reward, refuse_overwrite
from eg3d_rlhf.rewards.checkpoint import save_reward

#----------------------------------------------------------------------------

@click.command()
@click.option('--reward-model', 'reward_path', required=True, metavar='ZIP|DIR',
    help='The released bundle (reward-model-7wnzkgie-sfield256.zip or its unzipped 7wnzkgie/ folder), or a reward checkpoint')
@click.option('--out', type=OUT_FILE, required=True, metavar='FILE',
    help='Reward checkpoint to write (atomically): safetensors if it ends in .safetensors, else a weights_only .pt')
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust the bundle: its best_model.pt holds pickled objects, whose loading runs code')
@force_option
@click.option('--dry-run', is_flag=True, help='Read and check the bundle, print what would be written; write nothing')
def main(reward_path, out, trust_pickle, force, dry_run):
    """Read the bundle as data (best_model.pt with torch.load(weights_only=True) unless --trust-pickle, the run config
    with yaml.safe_load, its targets never imported), load its weights strictly into the `sigma-unet` reward, and
    save that with the published input contract: the 128x141x129 slab of the 256^3 gen_samples grid, min-max to
    [0, 100], axes (z, y, x). Every --reward-model reads the bundle directly too; the checkpoint loads faster and
    carries the contract in one file. Given one of our checkpoints, it rewrites it (weights, contract and training
    record unchanged) in the format --out's extension names: .safetensors, which needs no unpickling at all.

    \b
    python tools/convert_reward.py --reward-model reward-model-7wnzkgie-sfield256.zip --out reward-sigma-unet-7wnzkgie.safetensors
    python tools/convert_reward.py --reward-model my-reward.pt --out my-reward.safetensors
    """
    refuse_overwrite(out, force=force, inputs={'--reward-model': reward_path})
    reward = open_reward(reward_path, 'cpu', trust_pickle=trust_pickle)
    tensors = len(reward.model.state_dict())
    params = sum(v.numel() for v in reward.model.state_dict().values())
    summary = f'{reward.kind} reward, {tensors} tensors, {params / 1e6:.2f} M parameters, slab {list(reward.grid.shape)}'
    if dry_run:
        print(f'would write {out}: {summary}')
        return
    training = reward.info['training'] if 'training' in reward.info else dict(source=str(reward_path),
        weights=reward.info.get('weights'), run_config=reward.info.get('run_config'))     # Ours keep their record.
    save_reward(out, reward.model, reward.kind, reward.spec, training=training)
    print(f'{out}: {summary}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
