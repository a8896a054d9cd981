"""Compare a fine-tuned generator with its original on held-out seeds: reward change, preference, image consistency."""

import itertools
import os

import numpy as np
import torch
from tqdm import tqdm

from eg3d_rlhf.analysis import image_metrics, report_plots
from eg3d_rlhf.analysis.evaluation import reward_change, seed_rewards, win_rate
from eg3d_rlhf.data import annotators
from eg3d_rlhf.data.preferences import LabelError, load_judgements
from eg3d_rlhf.generators.base import sample_id
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_grid

#----------------------------------------------------------------------------
# Human (or any) labels of tuned vs original name their samples `original-<id>` and `tuned-<id>` (ids seedNNNNNN, or
# cCC-seedNNNNNN for conditional generators). Samples are keys (seed, condition): Generator3D.keys.

SIDES = ('original', 'tuned')


def side_id(side, seed, condition=None):
    return f'{side}-{sample_id(seed, condition)}'


def by_condition(keys, draw):
    """draw(seeds, condition) of each run of keys that share a condition, concatenated in key order (numpy or torch)."""
    parts = [draw([s for s, _ in run], c) for c, run in itertools.groupby(keys, lambda k: k[1])]
    return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else torch.cat(parts)


def label_choices(path, keys):
    """'tuned' | 'original' | 'tie' per judgement of one tuned and one original sample of the keys; skips dropped."""
    judgements = load_judgements(path, known_ids=[side_id(side, *k) for side in SIDES for k in keys])
    choices = []
    for j in judgements:
        sides = (j.a.split('-')[0], j.b.split('-')[0])
        if sorted(sides) != sorted(SIDES) or j.choice == 'skip':
            continue
        choices.append('tie' if j.choice == 'tie' else sides[0] if j.choice == 'a' else sides[1])
    if not choices:
        raise LabelError(f'{path} judges no tuned-vs-original pair of these seeds')
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
    """Up to `count` dataset images [N, 3, H, W] in [-1, 1] (OSError / ValueError when it cannot be read)."""
    from training.dataset import ImageFolderDataset
    dataset = ImageFolderDataset(path, use_labels=False)
    picks = [dataset[i][0] for i in range(min(count, len(dataset)))]
    return torch.from_numpy(np.stack(picks)).float() / 127.5 - 1

#----------------------------------------------------------------------------

def compare(generators, reward, seeds, outdir, taste=None, temperature=0.5, labels=None, annotator_res=128,
        extract=None, reals=None, reward_path=None, conditions=None):
    """Render both generators ({'original', 'tuned'}: generators.base.Generator3D) for the same samples (each seed
    under each of `conditions`), score them with the reward (contract.Reward), judge them by a simulated annotator's
    taste or by a labels file, and write report.json/.html and its pictures into outdir; returns the summary."""
    os.makedirs(outdir, exist_ok=True)
    keys = generators['original'].keys(seeds, conditions)
    taste_grid = slab_grid(annotator_res, cube_length=generators['original'].cube_length, crop=SlabCrop())
    rewards, images, slabs = {}, {}, ({} if taste else None)
    for side in tqdm(SIDES, desc='rendering', unit='generator'):
        G = generators[side]
        rewards[side] = by_condition(keys, lambda s, c: seed_rewards(G, reward, s, condition=c))
        images[side] = by_condition(keys, G.images)
        if taste:
            slabs[side] = by_condition(keys, lambda s, c: G.sigma_grid(s, taste_grid, c))

    described = f'{len(seeds)} seeds, {seeds[0]}..{seeds[-1]}'
    if keys[0][1] is not None:
        described += f', each under conditions {sorted({c for _, c in keys})}'
    summary = dict(**{side: generators[side].identity()['network'] for side in SIDES},
        reward_model=reward_path and os.path.abspath(reward_path), seeds=described)
    summary['reward'] = reward_change(rewards['original'], rewards['tuned'])
    if taste:
        noisy, noise_free = oracle_choices(taste, slabs, taste_grid, temperature)
        summary['preference'] = dict(source=f'oracle:{taste}, temperature {temperature}', **win_rate(noisy),
            noise_free=win_rate(noise_free))
    elif labels:
        summary['preference'] = dict(source=labels, **win_rate(label_choices(labels, keys)))
    else:
        summary['preference'] = 'not computed (give --annotator or --labels)'
    psnr, ssim = image_metrics.psnr_ssim(image_metrics.to_uint8_hwc(images['original']), image_metrics.to_uint8_hwc(images['tuned']))
    finite = psnr[np.isfinite(psnr)]
    summary['images'] = dict(mean_psnr_db=float(finite.mean()) if len(finite) else float('inf'),
        min_psnr_db=float(psnr.min()), identical=int((~np.isfinite(psnr)).sum()), mean_ssim=float(ssim.mean()))
    if extract is not None:
        summary['fid_kid'] = image_distances(extract, images, reals)
    else:
        summary['fid_kid'] = 'not computed (give --inception PATH to a local Inception network)'

    rc = summary['reward']
    out = lambda name: os.path.join(outdir, name)
    report_plots.plot_histograms(rewards['original'], rewards['tuned'], out('reward_histograms.png'), labels=SIDES)
    report_plots.plot_deltas(rewards['original'], rewards['tuned'], out('reward_deltas.png'))
    report_plots.plot_scatter(rewards['original'], rewards['tuned'], dict(slope=rc['fit_slope'], intercept=rc['fit_intercept']),
        out('reward_scatter.png'), labels=('original reward', 'tuned reward'))
    save_comparison_pictures(images, slabs, taste_grid, outdir)
    pictures = ['reward_histograms.png', 'reward_deltas.png', 'reward_scatter.png', 'images.png'] + (['geometry.png'] if taste else [])
    report_plots.write_report(outdir, 'Tuned vs original', summary, pictures)
    return summary

#----------------------------------------------------------------------------
