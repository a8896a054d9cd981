"""Why a reward says what it says: Shapley values and Integrated Gradients per facial region, as a report."""

import os

import click
import numpy as np
import torch

from eg3d_rlhf.analysis import attribution
from eg3d_rlhf.cli import (SEED, OUT_DIR, FINITE, NETWORK_HELP, REGIONS_HELP, check_bank_grid, conditions_option,
    device_option, draw_slabs, FiniteRange, load_regions, network_keys, network_path, one_line_errors, open_bank,
    open_reward, outermost_new_folder, parse_range, pick_device, all_or_nothing)
from eg3d_rlhf.data.bank import BankError
from eg3d_rlhf.generators.base import sample_id
from eg3d_rlhf.rewards.contract import ScoreError

#----------------------------------------------------------------------------

@click.command()
@click.option('--reward-model', 'reward_path', required=True, metavar='PT', help='Reward checkpoint to explain')
@click.option('--original', 'original_pkl', metavar='PKL|PT|bundled|bundled-flow',
    help='Change mode: the generator before fine-tuning (the baseline). ' + NETWORK_HELP)
@click.option('--tuned', 'tuned_pkl', metavar='PKL|PT', help='Change mode: the fine-tuned generator (the input)')
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust the pickles (networks; a reward bundle whose best_model.pt holds objects): loading a pickle runs code stored in it')
@click.option('--seeds', type=parse_range, default='1000-1015', show_default=True, metavar='LIST',
    help='Change mode: the seeds both generators draw')
@conditions_option
@click.option('--bank', 'bank_path', metavar='DIR', help="Bank mode: explain the bank's scores against --reference")
@click.option('--reference', type=click.Choice(['mean', 'empty']), default='mean', show_default=True,
    help="Bank mode: the baseline slab, the bank's mean or empty space (every voxel at the bank's lowest sigma)")
@click.option('--limit', type=click.IntRange(min=1), help="Bank mode: only the first N of the bank's samples")
@click.option('--regions', 'region_source', default='template', show_default=True,
    metavar='template|published|landmarks|NPY', help=REGIONS_HELP)
@click.option('--region-names', metavar='JSON', help='Names of the labels 0..K-1 of a .npy --regions volume')
@click.option('--landmarks', 'landmarks_path', metavar='NPY', help='3-D landmarks [98, 3] in WFLW order, world units')
@click.option('--landmark-margin', type=FiniteRange(min=0), default=0.02, show_default=True,
    help='World units added on every side of a landmark group\'s box')
@click.option('--permutations', type=click.IntRange(min=1), default=8, show_default=True,
    help='Shapley value sampling: random orders of the regions per sample')
@click.option('--ig-steps', type=click.IntRange(min=2), default=32, show_default=True,
    help='Integrated Gradients: points on the path from baseline to input')
@click.option('--meshes', type=click.IntRange(min=0), default=4, show_default=True,
    help='IG-coloured PLYs of this many samples')
@click.option('--level', type=FINITE, default=10.0, show_default=True, help='Sigma of the surface in meshes and pictures')
@click.option('--outdir', type=OUT_DIR, required=True, metavar='REPORT', help='Report folder (report.html, report.json, PNGs, PLYs)')
@click.option('--batch', type=click.IntRange(min=1), default=4, show_default=True, help='Samples explained per pass')
@click.option('--draw-batch', type=click.IntRange(min=1), default=1, show_default=True,
    help='Flow checkpoints: ids drawn per pipeline pass')
@click.option('--seed', type=SEED, default=0, show_default=True, help='Seed of the Shapley permutations')
@click.option('--dry-run', is_flag=True, help='Check the inputs and print the plan; compute nothing')
@device_option
def main(reward_path, original_pkl, tuned_pkl, trust_pickle, seeds, conditions, bank_path, reference, limit, region_source,
        region_names, landmarks_path, landmark_margin, permutations, ig_steps, meshes, level, outdir, batch, draw_batch,
        seed, dry_run, device_name):
    """Attribute a reward's scores to facial regions with Shapley value sampling (regions as players) and Integrated
    Gradients (per voxel, summed per region), both through the reward's own input path. Change mode (--original,
    --tuned): what made the reward move between two generators at the same seeds. Bank mode (--bank): a bank's
    scores against a reference slab.

    \b
    python tools/attribute.py --original bundled --tuned training-runs/00000-.../network-snapshot-000000.pkl \\
        --trust-pickle --reward-model checkpoints/reward-sigma-nose.safetensors --seeds 1000-1099 --outdir attribution
    python tools/attribute.py --bank my-bank --reference mean --reward-model checkpoints/reward-sigma-nose.safetensors \\
        --regions published --outdir attribution-bank
    """
    change = original_pkl is not None or tuned_pkl is not None
    if change == (bank_path is not None):
        raise click.UsageError('give --original and --tuned (change mode) or --bank (bank mode)')
    if change and (original_pkl is None or tuned_pkl is None):
        raise click.UsageError('change mode needs both --original and --tuned')
    device = pick_device(device_name)
    reward = open_reward(reward_path, device, trust_pickle=trust_pickle)
    regions = load_regions(region_source, reward.grid, region_names, landmarks_path, landmark_margin)
    if change:
        original_pkl, tuned_pkl = (network_path(p, trust_pickle) for p in (original_pkl, tuned_pkl))
        keys = network_keys(original_pkl, seeds, conditions)
        ids = [sample_id(s, c) for s, c in keys]
        what = f'{tuned_pkl} against {original_pkl} on {len(keys)} samples'
    else:
        bank = open_bank(bank_path)
        ids = bank.ids[:limit]
        check_bank_grid(bank, reward, reward_path)
        what = f'{len(ids)} samples of {bank_path} against the {reference} slab'
    counts = {n: c for n, c in regions.counts().items() if c}
    if dry_run:
        print(f'would explain the {reward.kind} reward {reward_path} on {what}; regions ({regions.source}): {counts}; '
            f'Shapley {permutations} permutations, IG {ig_steps} steps; report in {outdir}')
        return

    if change:
        baselines = draw_slabs(original_pkl, keys, reward.grid, device, batch, draw_batch)
        inputs = draw_slabs(tuned_pkl, keys, reward.grid, device, batch, draw_batch)
        mean_slab = baselines.mean(0).numpy()
    else:
        with one_line_errors(BankError):                 # A slab that cannot be read or is not finite.
            inputs = torch.from_numpy(np.stack([bank.slab(i) for i in ids]))
        baselines, mean_slab = attribution.reference_baselines(inputs, reference)
    info = dict(mode='change' if change else 'bank', reward_model=os.path.abspath(reward_path), ids=ids,
        region_source=regions.source, permutations=permutations, ig_steps=ig_steps,
        **(dict(original=original_pkl, tuned=tuned_pkl) if change else dict(bank=bank_path, reference=reference)))
    with all_or_nothing(outdir, outermost_new_folder(os.path.join(outdir, 'x'))), \
            one_line_errors(ScoreError):                # A score that is not finite: nothing to explain.
        summary = attribution.report(reward, inputs, baselines, regions, outdir, info, mean_slab,
            permutations=permutations, ig_steps=ig_steps, batch=batch, seed=seed, meshes=meshes, level=level)
    order = sorted(summary['regions'].items(), key=lambda kv: -abs(kv[1]['shapley']))
    print(f'mean reward change {summary["change"]["mean"]:+.3f} over {len(ids)} samples; per region (Shapley / IG / '
        'shares of |Shapley| / |IG|): ' + ', '.join(f'{n} {v["shapley"]:+.3f} / {v["ig"]:+.3f} / '
        f'{100 * v["shapley_share"]:.0f}% / {100 * v["ig_share"]:.0f}%' for n, v in order))
    print(f'completeness: Shapley max error {summary["completeness"]["shapley_max"]:.2e}, IG max error '
        f'{summary["completeness"]["ig_max"]:.2e}; Shapley-IG Spearman {summary["shapley_ig_spearman"]:.2f}')
    print(f'report: {os.path.join(outdir, "report.html")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
