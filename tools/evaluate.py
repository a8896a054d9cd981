"""Compare a fine-tuned generator with its original on held-out seeds: reward change, preference, image consistency."""

import os
import sys

import click
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # Run from anywhere.

from eg3d_rlhf.analysis import image_metrics, report_plots  # noqa: E402
from eg3d_rlhf.data import annotators
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.data.bank import grid_from_meta                                           # noqa: E402
from eg3d_rlhf.analysis.evaluation import SeedRenderer, reward_change, win_rate              # noqa: E402
from eg3d_rlhf.data.preferences import LabelError, load_judgements, seed_id              # noqa: E402
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, load_reward         # noqa: E402
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_grid                                     # noqa: E402
from eg3d_rlhf.cli import BUNDLED, load_generator, parse_range, pick_device, require_trust  # noqa: E402

#----------------------------------------------------------------------------
# Human (or any) labels of tuned vs original name their samples `original-seedNNNNNN` and `tuned-seedNNNNNN`.

SIDES = ('original', 'tuned')


def sample_id(side, seed):
    return f'{side}-{seed_id(seed)}'


def label_choices(path, seeds):
    """'tuned' | 'original' | 'tie' per judgement of one tuned and one original sample of the seeds; skips dropped."""
    known = [sample_id(side, s) for side in SIDES for s in seeds]
    try:
        judgements = load_judgements(path, known_ids=known)
    except (OSError, LabelError) as err:
        raise click.ClickException(f'--labels: {err}')
    choices = []
    for j in judgements:
        sides = (j.a.split('-')[0], j.b.split('-')[0])
        if sorted(sides) != sorted(SIDES) or j.choice == 'skip':
            continue
        choices.append('tie' if j.choice == 'tie' else sides[0] if j.choice == 'a' else sides[1])
    if not choices:
        raise click.ClickException(f'--labels: {path} judges no tuned-vs-original pair of these seeds')
    return choices


def oracle_choices(taste, slabs, grid, temperature, level=10.0):
    """(noisy choices, noise-free choices) of a simulated annotator judging tuned vs original per seed; the taste
    is standardised over both generators' samples together."""
    scores = {}
    for side in SIDES:
        for i, slab in enumerate(slabs[side]):
            scores[(side, i)] = annotators.TASTES[taste](slab.numpy(), grid, level)
    oracle = annotators.OracleAnnotator(taste, scores, temperature=temperature, seed=0)
    names = {'a': 'tuned', 'b': 'original', 'tie': 'tie'}
    pairs = [(('tuned', i), ('original', i)) for i in range(len(slabs['tuned']))]
    return [names[oracle.judge(a, b)] for a, b in pairs], [names[oracle.prefers(a, b)] for a, b in pairs]

#----------------------------------------------------------------------------

def save_comparison_pictures(images, slabs, grid, outdir, count=8):
    """images.png (original row above tuned row) and geometry.png (profile previews, same layout)."""
    count = min(count, len(images['original']))
    rows = [np.concatenate(list(image_metrics.to_uint8_hwc(images[side][:count])), axis=1) for side in SIDES]
    preview.save_picture(np.concatenate(rows, axis=0), os.path.join(outdir, 'images.png'))
    if slabs is not None:
        rows = [np.concatenate([preview.render_views(s.numpy(), grid, views=('profile',), resolution=128)['profile']
            for s in slabs[side][:count]], axis=1) for side in SIDES]
        preview.save_picture(np.concatenate(rows, axis=0), os.path.join(outdir, 'geometry.png'))


def image_distances(extract, images, reals):
    """FID and KID of each generator against the reference set (reals, or the original's images)."""
    ref = image_metrics.features(extract, reals if reals is not None else images['original'])
    result = dict(reference='dataset' if reals is not None else 'original generator')
    for side in SIDES if reals is not None else ('tuned',):
        f = image_metrics.features(extract, images[side])
        result[side] = dict(fid=image_metrics.fid_from_features(f, ref), kid=image_metrics.kid_from_features(f, ref))
    return result


def load_reals(path, count):
    """Up to `count` dataset images [N, 3, H, W] in [-1, 1]."""
    from training.dataset import ImageFolderDataset
    try:
        dataset = ImageFolderDataset(path, use_labels=False)
    except (IOError, ValueError) as err:
        raise click.ClickException(f'--data: {err}')
    picks = [dataset[i][0] for i in range(min(count, len(dataset)))]
    return torch.from_numpy(np.stack(picks)).float() / 127.5 - 1

#----------------------------------------------------------------------------

@click.command()
@click.option('--original', 'original_pkl', required=True, metavar='PKL|bundled', help='The generator before fine-tuning')
@click.option('--tuned', 'tuned_pkl', required=True, metavar='PKL', help='The fine-tuned generator (a run snapshot)')
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust the pickles: loading a pickle runs code stored in it')
@click.option('--reward-model', 'reward_path', required=True, metavar='PT', help='Reward checkpoint to score both with')
@click.option('--seeds', type=parse_range, default='1000-1099', show_default=True, metavar='LIST',
    help='Held-out seeds (never the reward model\'s training seeds)')
@click.option('--labels', metavar='JSONL', help='Judgements of original-seedNNNNNN vs tuned-seedNNNNNN samples')
@click.option('--annotator', metavar='oracle:NAME', help='Simulated annotator judging tuned vs original per seed')
@click.option('--temperature', type=click.FloatRange(min=0), default=0.5, show_default=True, help="The annotator's noise")
@click.option('--res', 'resolution', type=click.IntRange(min=16), default=128, show_default=True,
    help="Cube resolution of the slabs the annotator judges")
@click.option('--inception', metavar='PATH', help='Local feature network for FID/KID (TorchScript, or NVIDIA\'s pickle)')
@click.option('--data', metavar='ZIP', help='Real images for FID/KID (default: compare tuned with original samples)')
@click.option('--outdir', required=True, metavar='REPORT', help='Report folder (report.html, report.json, PNGs)')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Seeds per generator pass')
@click.option('--dry-run', is_flag=True, help='Check the inputs and print the plan; render nothing')
@click.option('--device', 'device_name', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
def main(original_pkl, tuned_pkl, trust_pickle, reward_path, seeds, labels, annotator, temperature, resolution,
        inception, data, outdir, batch, dry_run, device_name):
    """Render both generators for the same seeds (z, camera, truncation 0.7 as sample banks) and report: how the
    reward moved per seed (fraction that rose, mean change, slope of final on initial), the win rate of tuned over
    original by --labels or --annotator (exact binomial p, Wilson 95% interval), PSNR and SSIM of tuned vs original
    images, and FID/KID when --inception names a local file.

    \b
    python tools/evaluate.py --original bundled --tuned training-runs/00000-.../network-snapshot-000000.pkl \\
        --trust-pickle --reward-model checkpoints/reward-sigma-nose.pt --annotator oracle:nose --outdir report
    """
    if labels and annotator:
        raise click.UsageError('give --labels or --annotator, not both')
    taste = None
    if annotator:
        try:
            taste = annotators.parse_annotator(annotator)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint='--annotator')
    if original_pkl == 'bundled':
        original_pkl = BUNDLED
    for path in (original_pkl, tuned_pkl):
        if not os.path.isfile(path):
            raise click.ClickException(f'{path}: no such network pickle')
        if os.path.abspath(path) != BUNDLED:
            require_trust(path, trust_pickle)
    if inception is not None and not os.path.isfile(inception):
        raise click.ClickException(f'--inception: {inception} does not exist (it is never downloaded)')
    if data is not None and (inception is None or not os.path.exists(data)):
        raise click.ClickException(f'--data: {data} does not exist' if inception else '--data is for FID/KID: give --inception too')
    device = pick_device(device_name)
    try:
        model, info = load_reward(reward_path, device)
    except RewardCheckpointError as err:
        raise click.ClickException(f'--reward-model: {err}')
    if dry_run:
        print(f'would compare {tuned_pkl} with {original_pkl} on {len(seeds)} seeds with the {info["kind"]} reward '
            f'{reward_path}; preference from {labels or annotator or "nothing"}; FID/KID '
            f'{"with " + inception if inception else "not computed"}; report in {outdir}')
        return

    os.makedirs(outdir, exist_ok=True)
    G = {side: load_generator(path, device) for side, path in zip(SIDES, (original_pkl, tuned_pkl))}
    reward_grid = grid_from_meta(info['input']['slab'])
    cube = float(G['original'].rendering_kwargs['box_warp'])
    taste_grid = slab_grid(resolution, cube_length=cube, crop=SlabCrop())
    rewards, images, slabs = {}, {}, ({} if taste else None)
    for side in tqdm(SIDES, desc='rendering', unit='generator'):
        r = SeedRenderer(G[side], batch=batch)
        rewards[side] = r.rewards(seeds, model, reward_grid)
        images[side] = r.images(seeds)
        if taste:
            slabs[side] = r.slabs(seeds, taste_grid)

    summary = dict(original=os.path.abspath(original_pkl), tuned=os.path.abspath(tuned_pkl),
        reward_model=os.path.abspath(reward_path), seeds=f'{len(seeds)} seeds, {seeds[0]}..{seeds[-1]}')
    summary['reward'] = reward_change(rewards['original'], rewards['tuned'])
    if taste:
        noisy, noise_free = oracle_choices(taste, slabs, taste_grid, temperature)
        summary['preference'] = dict(source=f'{annotator}, temperature {temperature}', **win_rate(noisy),
            noise_free=win_rate(noise_free))
    elif labels:
        summary['preference'] = dict(source=labels, **win_rate(label_choices(labels, seeds)))
    else:
        summary['preference'] = 'not computed (give --annotator or --labels)'
    psnr, ssim = image_metrics.psnr_ssim(image_metrics.to_uint8_hwc(images['original']), image_metrics.to_uint8_hwc(images['tuned']))
    finite = psnr[np.isfinite(psnr)]
    summary['images'] = dict(mean_psnr_db=float(finite.mean()) if len(finite) else float('inf'),
        min_psnr_db=float(psnr.min()), identical=int((~np.isfinite(psnr)).sum()), mean_ssim=float(ssim.mean()))
    if inception:
        try:
            extract = image_metrics.load_inception(inception, trust_pickle=trust_pickle, device=device)
        except image_metrics.InceptionError as err:
            raise click.ClickException(f'--inception: {err}')
        reals = load_reals(data, len(seeds)) if data else None
        summary['fid_kid'] = image_distances(extract, images, reals)
    else:
        summary['fid_kid'] = 'not computed (give --inception PATH to a local Inception network)'

    rc = summary['reward']
    report_plots.plot_histograms(rewards['original'], rewards['tuned'], os.path.join(outdir, 'reward_histograms.png'), labels=SIDES)
    report_plots.plot_deltas(rewards['original'], rewards['tuned'], os.path.join(outdir, 'reward_deltas.png'))
    report_plots.plot_scatter(rewards['original'], rewards['tuned'], dict(slope=rc['fit_slope'], intercept=rc['fit_intercept']),
        os.path.join(outdir, 'reward_scatter.png'), labels=('original reward', 'tuned reward'))
    save_comparison_pictures(images, slabs, taste_grid, outdir)
    pictures = ['reward_histograms.png', 'reward_deltas.png', 'reward_scatter.png', 'images.png'] + (['geometry.png'] if taste else [])
    report_plots.write_report(outdir, 'Tuned vs original', summary, pictures)

    pref = summary['preference']
    print(f'reward rose for {rc["rose"]} of {rc["seeds"]} seeds; mean change {rc["mean_delta"]:+.3f} '
        f'(95% CI {rc["mean_delta_ci95"][0]:+.3f}..{rc["mean_delta_ci95"][1]:+.3f}); slope {rc["fit_slope"]:.2f}')
    if isinstance(pref, dict):
        print(f'preferred tuned in {pref["wins"]} of {pref["wins"] + pref["losses"]} decided pairs '
            f'({100 * pref["win_rate"]:.1f}%, Wilson 95% {100 * pref["wilson95"][0]:.1f}-{100 * pref["wilson95"][1]:.1f}%, '
            f'binomial p {pref["binomial_p"]:.2g}); {pref["ties"]} ties')
    print(f'images: mean PSNR {summary["images"]["mean_psnr_db"]:.2f} dB, mean SSIM {summary["images"]["mean_ssim"]:.3f}')
    print(f'report: {os.path.join(outdir, "report.html")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
