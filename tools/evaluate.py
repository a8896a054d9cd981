"""Compare a fine-tuned generator with its original on held-out seeds: reward change, preference, image consistency."""

import os

import click
import numpy as np

from eg3d_rlhf.analysis import collateral, image_metrics, view_geometry
from eg3d_rlhf.analysis.compare import SIDES, compare, load_reals
from eg3d_rlhf.cli import (OUT_DIR, NETWORK_HELP, all_or_nothing, check_input, conditions_option, device_option, FiniteRange,
    load_generator, network_keys, network_path, one_line_errors, open_reward, outermost_new_folder, parse_range, pick_device)
from eg3d_rlhf.data import annotators
from eg3d_rlhf.data.preferences import LabelError
from eg3d_rlhf.shards import Ranks, ShardError

#----------------------------------------------------------------------------

@click.command()
@click.option('--original', 'original_pkl', required=True, metavar='PKL|PT|bundled|bundled-flow',
    help='The generator before fine-tuning. ' + NETWORK_HELP)
@click.option('--tuned', 'tuned_pkl', required=True, metavar='PKL|PT', help='The fine-tuned generator (a run snapshot)')
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust the pickles, the --inception file and a reward bundle whose best_model.pt holds objects: loading them can run code stored in them')
@click.option('--reward-model', 'reward_path', required=True, metavar='PT', help='Reward checkpoint to score both with')
@click.option('--seeds', type=parse_range, default='1000-1099', show_default=True, metavar='LIST',
    help='Held-out seeds (never the reward model\'s training seeds)')
@conditions_option
@click.option('--labels', metavar='JSONL', help='Judgements of original-<id> vs tuned-<id> samples (ids as in banks)')
@click.option('--annotator', metavar='oracle:NAME', help='Simulated annotator judging tuned vs original per seed')
@click.option('--temperature', type=FiniteRange(min=0), default=0.5, show_default=True, help="The annotator's noise")
@click.option('--res', 'resolution', type=click.IntRange(min=16), default=128, show_default=True,
    help="Cube resolution of the slabs the annotator judges")
@click.option('--inception', metavar='PATH', help='Local feature network for FID/KID: a torch.export or TorchScript '
    'archive, or NVIDIA\'s pickle (each needs --trust-pickle: loading them can run code)')
@click.option('--data', metavar='ZIP', help='Real images for FID/KID (default: compare tuned with original samples)')
@click.option('--outdir', type=OUT_DIR, required=True, metavar='REPORT', help='Report folder (report.html, report.json, PNGs)')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Seeds per generator pass')
@click.option('--draw-batch', type=click.IntRange(min=1), default=1, show_default=True,
    help='Flow checkpoints: ids drawn per pipeline pass (1 = each alone, bit-exact per id; more is faster)')
@click.option('--view-samples', type=click.IntRange(min=0), default=view_geometry.SAMPLES, show_default=True,
    help='EG3D: the first N seeds rendered from five views (depth and normal change beside image PSNR; 0 = none)')
@click.option('--dry-run', is_flag=True, help='Check the inputs and print the plan; render nothing')
@device_option
def main(original_pkl, tuned_pkl, trust_pickle, reward_path, seeds, conditions, labels, annotator, temperature, resolution,
        inception, data, outdir, batch, draw_batch, view_samples, dry_run, device_name):
    """Render both generators (EG3D pickles, or two flow checkpoints with their --conditions) for the same seeds (z,
    camera, truncation 0.7 as sample banks; a flow's noise per id) and report: how the reward moved per seed (fraction
    that rose, mean change, slope of final on initial), the win rate of tuned over original by --labels or
    --annotator (exact binomial p, Wilson 95% interval), what else changed (every simulated taste at temperature 0,
    the mesh statistics, nose prominence and asymmetry in world units, diversity; the first line says "reward
    hacking suspected" when the reward rose while a taste prefers the original, p < 0.05), PSNR and SSIM of tuned
    vs original images, and FID/KID when --inception names a local file; front and profile previews of the four
    samples whose collateral changed most (original beside tuned, and where the surface moved) and an orbit GIF of
    the first. Two flows also get a stage-consistency figure (IoU of the first stage's structure with the finished
    asset's) and a diversity figure (pairwise slab distances). Under torchrun every process draws its share of the
    samples and rank 0 writes the report.

    \b
    python tools/evaluate.py --original bundled --tuned training-runs/00000-.../network-snapshot-000000.pkl \\
        --trust-pickle --reward-model checkpoints/reward-sigma-nose.safetensors --annotator oracle:nose --outdir report
    """
    if labels and annotator:
        raise click.UsageError('give --labels or --annotator, not both')
    check_input(labels, '--labels')                                     # Read after rendering: checked now.
    taste = None
    if annotator:
        try:
            taste = annotators.parse_annotator(annotator)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint='--annotator')
    original_pkl, tuned_pkl = (network_path(path, trust_pickle) for path in (original_pkl, tuned_pkl))
    keys = network_keys(original_pkl, seeds, conditions)
    if inception is not None and not os.path.isfile(inception):
        raise click.ClickException(f'--inception: {inception} does not exist (it is never downloaded)')
    if data is not None and (inception is None or not os.path.exists(data)):
        raise click.ClickException(f'--data: {data} does not exist' if inception else '--data is for FID/KID: give --inception too')
    with one_line_errors(ShardError):
        ranks = Ranks()
    device = ranks.device(pick_device(device_name))
    reward = open_reward(reward_path, device, trust_pickle=trust_pickle)
    if dry_run:
        print(f'would compare {tuned_pkl} with {original_pkl} on {len(keys)} samples with the {reward.kind} reward '
            f'{reward_path}; preference from {labels or annotator or "nothing"}; FID/KID '
            f'{"with " + inception if inception else "not computed"}; report in {outdir}')
        return

    extract = reals = None
    if inception:
        try:
            extract = image_metrics.load_inception(inception, trust_pickle=trust_pickle, device=device)
        except image_metrics.InceptionError as err:
            raise click.ClickException(f'--inception: {err}')
        if data:
            try:
                reals = load_reals(data, len(keys))
            except (IOError, ValueError) as err:
                raise click.ClickException(f'--data: {err}')
    generators = {side: load_generator(path, device, batch=batch, draw_batch=draw_batch)
        for side, path in zip(SIDES, (original_pkl, tuned_pkl))}
    if generators['original'].conditions != generators['tuned'].conditions:
        raise click.ClickException('--original and --tuned differ in their conditions: they are not one model')
    try:                                        # A full disk or a read-only --outdir: one line, no report half written.
        with all_or_nothing(outdir, outermost_new_folder(os.path.join(outdir, 'x'))):
            summary = compare(generators, reward, seeds, outdir, taste=taste, temperature=temperature, labels=labels,
                annotator_res=resolution, extract=extract, reals=reals, reward_path=reward_path, conditions=conditions,
                ranks=ranks, view_samples=view_samples)
    except LabelError as err:
        raise click.ClickException(f'--labels: {err}')
    except OSError as err:                      # dnnlib.util.WriteError (a ClickException) says which file itself.
        if isinstance(err, click.ClickException):
            raise
        raise click.ClickException(f'--labels: {err}' if labels and err.filename == labels else str(err))
    ranks.close()
    if summary is None:                         # torchrun: ranks other than 0 drew their share; rank 0 reports.
        return

    rc = summary['reward']
    pref = summary['preference']
    if summary['alarm']:
        print(summary['alarm'])
    print(f'reward rose for {rc["rose"]} of {rc["seeds"]} samples; mean change {rc["mean_delta"]:+.3f} '
        f'(95% CI {rc["mean_delta_ci95"][0]:+.3f}..{rc["mean_delta_ci95"][1]:+.3f}, Cohen\'s d {rc["cohens_d"]:+.2f}); '
        f'slope {rc["fit_slope"]:.2f}; rank agreement Spearman {rc["spearman"]:.3f} ({rc["spearman_ci95"][0]:.3f}..'
        f'{rc["spearman_ci95"][1]:.3f}), Kendall {rc["kendall_tau"]:.3f}')
    if isinstance(pref, dict):
        print(f'preferred tuned in {pref["wins"]} of {pref["wins"] + pref["losses"]} decided pairs '
            f'({100 * pref["win_rate"]:.1f}%, Wilson 95% {100 * pref["wilson95"][0]:.1f}-{100 * pref["wilson95"][1]:.1f}%, '
            f'binomial p {pref["binomial_p"]:.2g}); {pref["ties"]} ties')
    if 'stage_consistency' in summary:
        sc, div = summary['stage_consistency'], summary['diversity']
        print(f'structure IoU (first stage vs finished asset): original {sc["original"]["mean"]:.3f}, tuned '
            f'{sc["tuned"]["mean"]:.3f}; diversity (mean pairwise slab RMS): original {div["original"]["all"]:.3f}, '
            f'tuned {div["tuned"]["all"]:.3f}')
    print(collateral.summary_line(summary['collateral']))
    print('\n'.join(collateral.describe_truth(summary['collateral'])))
    print(f'images: mean PSNR {summary["images"]["mean_psnr_db"]:.2f} dB, mean SSIM {summary["images"]["mean_ssim"]:.3f}')
    if 'views' in summary:
        mean = lambda k: np.nanmean([r[k] for r in summary['views']])
        print(f'{len(summary["views"])} views: mean |depth change| {mean("depth_change"):.4f} world units, normals turned '
            f'{mean("normal_turn_deg"):.2f} deg, image PSNR {mean("image_psnr_db"):.2f} dB')
    print(f'report: {os.path.join(outdir, "report.html")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
