"""Shrink a training snapshot for bundling: G_ema stored once (also as G), D kept, so fine-tuning can resume from it."""

import os

import click

from eg3d_rlhf.cli import OUT_FILE, refuse_overwrite, require_trust
from training import legacy

#----------------------------------------------------------------------------

@click.command()
@click.option('--snapshot', 'snapshot_pkl', help='network-snapshot-KKKKKK.pkl to shrink', required=True, metavar='PKL')
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust PKL: loading a pickle runs code stored in it')
@click.option('--out', type=OUT_FILE, help='Output pickle', required=True, metavar='PKL')
@click.option('--force', is_flag=True, help='Overwrite --out if it exists')
@click.option('--dry-run', is_flag=True, help='Print what would be written; write nothing')
def main(snapshot_pkl, trust_pickle, out, force, dry_run):
    """Write a snapshot whose 'G' is its 'G_ema' (the same object, so pickled once): about two thirds of the size.
    Resuming from it (train.py --resume) starts G and G_ema from the averaged weights, and D from the trained D.

    \b
    python tools/bundle_checkpoint.py --snapshot=runs/00000-.../network-snapshot-000016.pkl --trust-pickle \\
        --out=checkpoints/synthetic-heads64.pkl
    """
    require_trust(snapshot_pkl, trust_pickle)
    refuse_overwrite(out, force=force, inputs={'--snapshot': snapshot_pkl})
    if dry_run:
        print(f'would write {out} from {snapshot_pkl} (G = G_ema, D kept)')
        return
    try:
        data = legacy.load_network_pkl(snapshot_pkl, trust=True)
    except (OSError, ValueError) as err:
        raise click.ClickException(f'{snapshot_pkl}: {err}')
    missing = [key for key in ('G_ema', 'D') if data.get(key) is None]
    if missing:
        raise click.ClickException(f'{snapshot_pkl} has no {" or ".join(missing)}; it is not a training snapshot')
    data['G'] = data['G_ema']
    legacy.save_network_pkl(out, data)
    print(f'wrote {out} ({os.path.getsize(out) / 2**20:.1f} MiB)')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
