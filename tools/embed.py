"""Where samples sit in a reward's feature space: UMAP of original vs tuned, and of one generator coloured by reward."""

import os

import click
import numpy as np
import torch

from eg3d_rlhf.analysis import embedding
from eg3d_rlhf.cli import (SEED, OUT_DIR, NETWORK_HELP, check_bank_grid, conditions_option, device_option, draw_slabs,
    FiniteRange, all_or_nothing, network_keys, network_path, one_line_errors, open_bank, open_reward, outermost_new_folder,
    parse_range, pick_device)
from eg3d_rlhf.data.bank import BankError
from eg3d_rlhf.generators.base import sample_id
from eg3d_rlhf.rewards.contract import ScoreError

#----------------------------------------------------------------------------

@click.command()
@click.option('--reward-model', 'reward_path', required=True, metavar='PT', help='Reward checkpoint whose feature to embed')
@click.option('--original', 'original_pkl', metavar='PKL|PT|bundled|bundled-flow',
    help='The generator whose samples are coloured by reward (and the "original" side). ' + NETWORK_HELP)
@click.option('--tuned', 'tuned_pkl', metavar='PKL|PT', help='Also embed this fine-tuned generator at the same seeds')
@click.option('--bank', 'bank_path', metavar='DIR', help="Instead of --original: a bank's samples coloured by reward")
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust the pickles (networks; a reward bundle whose best_model.pt holds objects): loading a pickle runs code stored in it')
@click.option('--seeds', type=parse_range, default='1000-1099', show_default=True, metavar='LIST', help='Seeds drawn')
@conditions_option
@click.option('--pca', 'pca_components', type=click.IntRange(min=2), default=50, show_default=True,
    help='PCA components before UMAP (fewer when there are fewer samples)')
@click.option('--neighbors', type=click.IntRange(min=2), default=25, show_default=True, help="UMAP's n_neighbors")
@click.option('--min-dist', type=FiniteRange(min=0, max=1), default=0.1, show_default=True, help="UMAP's min_dist")
@click.option('--k', type=click.IntRange(min=1), default=5, show_default=True, help='Neighbours of the k-NN separation')
@click.option('--seed', type=SEED, default=0, show_default=True, help='Seed of PCA, UMAP and the k-NN folds')
@click.option('--outdir', type=OUT_DIR, required=True, metavar='REPORT', help='Report folder (report.html, report.json, PNGs)')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Samples per pass')
@click.option('--draw-batch', type=click.IntRange(min=1), default=1, show_default=True,
    help='Flow checkpoints: ids drawn per pipeline pass')
@click.option('--dry-run', is_flag=True, help='Check the inputs and print the plan; compute nothing')
@device_option
def main(reward_path, original_pkl, tuned_pkl, bank_path, trust_pickle, seeds, conditions, pca_components, neighbors,
        min_dist, k, seed, outdir, batch, draw_batch, dry_run, device_name):
    """Embed the reward's global feature (PCA, then UMAP with a fixed seed). With --tuned: original and
    tuned samples of the same seeds in one map, and how cleanly a k-NN classifier tells them apart (stratified 5-fold
    accuracy in the UMAP plane and in the feature's PCA space). Always: the original's (or the bank's) samples
    coloured by reward, with Spearman's rho between reward and the first UMAP axis and the first principal component.

    \b
    python tools/embed.py --original bundled --tuned training-runs/00000-.../network-snapshot-000000.pkl \\
        --trust-pickle --reward-model checkpoints/reward-sigma-nose.safetensors --seeds 1000-1099 --outdir embedding
    """
    if (original_pkl is None) == (bank_path is None):
        raise click.UsageError('give --original (optionally with --tuned) or --bank')
    if tuned_pkl is not None and original_pkl is None:
        raise click.UsageError('--tuned needs --original')
    device = pick_device(device_name)
    reward = open_reward(reward_path, device, trust_pickle=trust_pickle)
    if original_pkl is not None:
        paths = [network_path(p, trust_pickle) for p in (original_pkl, tuned_pkl) if p is not None]
        keys = network_keys(paths[0], seeds, conditions)
        what = f'{len(keys)} samples of {" and ".join(paths)}'
    else:
        bank = open_bank(bank_path)
        check_bank_grid(bank, reward, reward_path)
        what = f'{len(bank)} samples of {bank_path}'
    if dry_run:
        print(f'would embed the {reward.kind} reward\'s feature of {what}: PCA {pca_components}, UMAP n_neighbors '
            f'{neighbors} min_dist {min_dist}; report in {outdir}')
        return

    if original_pkl is not None:
        slabs = [draw_slabs(p, keys, reward.grid, device, batch, draw_batch) for p in paths]
        names = [[f'{sample_id(*key)} of {p}' for key in keys] for p in paths]
    else:
        with one_line_errors(BankError):                 # A slab that cannot be read or is not finite.
            slabs = [torch.from_numpy(np.stack(list(bank.slabs().values())))]
        names = [bank.ids]
    with all_or_nothing(outdir, outermost_new_folder(os.path.join(outdir, 'x'))), \
            one_line_errors(embedding.EmbeddingError, ScoreError):
        summary = embedding.report(reward, slabs, outdir, reward_path, pca_components, neighbors, min_dist, k=k, seed=seed,
            batch=batch, names=names)
    if 'separation' in summary:
        print(f'original vs tuned: k-NN accuracy {summary["separation"]["knn_umap"]:.3f} in the UMAP plane, '
            f'{summary["separation"]["knn_pca"]:.3f} in PCA space')
    print(f'reward vs UMAP 1: Spearman {summary["by_reward"]["spearman_umap1"]:+.3f}; vs PC 1: '
        f'{summary["by_reward"]["spearman_pc1"]:+.3f}')
    print(f'report: {os.path.join(outdir, "report.html")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
