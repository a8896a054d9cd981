"""Compare a fine-tuned generator with its original on held-out seeds: reward change, preference, collateral, images."""

import json
import os

import numpy as np
import torch
from tqdm import tqdm

from dnnlib.util import atomic_write
from eg3d_rlhf.analysis import collateral, flow_quality, image_metrics, report_plots, view_geometry
from eg3d_rlhf.analysis.evaluation import fit_slope, reward_change, seed_rewards, win_rate
from eg3d_rlhf.analysis.flow_quality import structure_iou
from eg3d_rlhf.data import annotators
from eg3d_rlhf.data.bank import passes
from eg3d_rlhf.data.preferences import LabelError, load_judgements
from eg3d_rlhf.generators import registry
from eg3d_rlhf.generators.base import sample_id
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_grid
from eg3d_rlhf.shards import Ranks

#----------------------------------------------------------------------------
# Human (or any) labels of tuned vs original name their samples `original-<id>` and `tuned-<id>` (ids seedNNNNNN, or
# cCC-seedNNNNNN for conditional generators). Samples are keys (seed, condition): Generator3D.keys.

SIDES = ('original', 'tuned')
PREVIEW_SAMPLES = 4         # Samples in before_after.png; the first of them also gets orbit.gif.


def side_id(side, seed, condition=None):
    return f'{side}-{sample_id(seed, condition)}'


def stage_consistency(ious, conditions):
    """Mean, minimum and per-condition mean of each side's structure IoU [N] (flow_quality.structure_iou: the first
    stage's plan against the finished asset), and the mean paired change tuned - original."""
    result = {}
    for side in SIDES:
        per = {str(c): float(np.mean([v for v, k in zip(ious[side], conditions) if k == c])) for c in dict.fromkeys(conditions)}
        result[side] = dict(mean=float(np.mean(ious[side])), min=float(np.min(ious[side])), per_condition=per)
    result['mean_change'] = float(np.mean(ious['tuned'] - ious['original']))
    return result


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
            scores[(side, i)] = annotators.taste_function(taste)(slab.numpy(), grid, level)
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


def save_before_after(keys, slabs, measures, grid, outdir, count=PREVIEW_SAMPLES):
    """before_after.png: the `count` samples whose collateral changed most (collateral.most_changed: the worst taste's
    fall in standard deviations), original beside tuned from the front and in profile, and where the surface moved;
    orbit.gif: the first of them turning. From compare()'s slabs [N, *grid] and measures of each side; returns the
    rows shown ([{id, taste, change_sd}])."""
    picks = collateral.most_changed(measures['original'], measures['tuned'], count)
    chosen = [i for i, _, _ in picks]
    labels = [f'{sample_id(*keys[i])}\n{taste} {change:+.1f} sd' for i, taste, change in picks]
    picture = collateral.strip(slabs['original'][chosen].numpy(), slabs['tuned'][chosen].numpy(), grid, labels, names=SIDES)
    preview.save_picture(picture, os.path.join(outdir, 'before_after.png'))
    preview.save_orbit([slabs[side][chosen[0]].numpy() for side in SIDES], grid, os.path.join(outdir, 'orbit.gif'), SIDES,
        sample_id(*keys[chosen[0]]))
    return [dict(id=sample_id(*keys[i]), taste=taste, change_sd=float(change)) for i, taste, change in picks]


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

def render(generators, reward, keys, taste_grid, ranks):
    """Rewards, images, taste-grid slabs and (flows) structure IoUs of each side's samples of keys, in key order: each
    torchrun rank draws every N-th chunk and rank 0 gathers them (None on the other ranks). A chunk's reward, picture,
    slab (and flow structure) come from one draw: flows keep their last `keep` draws; EG3D chunks are its `batch`, the
    passes a one-process run makes, so sharded results are the same."""
    flows = all(registry.has(G, 'stages') for G in generators.values())     # Multi-stage: stage consistency too.
    mine = {}
    for side in SIDES:
        G = generators[side]
        chunks = list(enumerate(passes(keys, getattr(G, 'keep', G.batch))))
        for index, (condition, chunk) in tqdm(ranks.share(chunks), desc=f'rendering {side}', unit='chunk'):
            mine[side, index] = (seed_rewards(G, reward, chunk, condition=condition), G.images(chunk, condition),
                G.sigma_grid(chunk, taste_grid, condition),
                [structure_iou(G.pipeline, x) for x in G.samples(chunk, condition)] if flows else [])
    shares = ranks.gather(mine)
    if not ranks.main:
        return None
    done = {k: v for share in shares for k, v in share.items()}
    parts = {side: [v for (s, _), v in sorted(done.items()) if s == side] for side in SIDES}
    rewards = {side: np.concatenate([p[0] for p in parts[side]]) for side in SIDES}
    images = {side: torch.cat([p[1] for p in parts[side]]) for side in SIDES}
    slabs = {side: torch.cat([p[2] for p in parts[side]]) for side in SIDES}
    ious = {side: np.concatenate([iou for p in parts[side] for iou in p[3]]) if flows else None for side in SIDES}
    return rewards, images, slabs, ious


def compare(generators, reward, seeds, outdir, taste=None, temperature=0.5, labels=None, annotator_res=128,
        extract=None, reals=None, reward_path=None, conditions=None, ranks=None, view_samples=view_geometry.SAMPLES):
    """Render both generators ({'original', 'tuned'}: generators.base.Generator3D) for the same samples (each seed
    under each of `conditions`), score them with the reward (contract.Reward), judge them by a simulated annotator's
    taste or by a labels file, measure what else changed (analysis/collateral.py: every taste, the mesh statistics,
    the true geometry, diversity; summary['alarm'] says when the reward rose at a taste's cost), and write
    report.json/.html and its pictures into outdir; returns the summary. EG3D generators are also rendered from
    several views (analysis/view_geometry.py: depth and normal change beside image PSNR) for the first view_samples
    seeds (0: not). Under torchrun (ranks: shards.Ranks) the
    samples are drawn by every rank and the rest is rank 0's; the other ranks return None."""
    os.makedirs(outdir, exist_ok=True)
    keys = generators['original'].keys(seeds, conditions)
    taste_grid = slab_grid(annotator_res, cube_length=generators['original'].cube_length, crop=SlabCrop())
    flows = all(registry.has(G, 'stages') for G in generators.values())     # Multi-stage: stage consistency too.
    rendered = render(generators, reward, keys, taste_grid, ranks or Ranks())
    if rendered is None:                                                    # A torchrun rank other than 0: done.
        return None
    rewards, images, slabs, ious = rendered

    described = f'{len(seeds)} seeds, {seeds[0]}..{seeds[-1]}'
    if keys[0][1] is not None:
        described += f', each under conditions {sorted({c for _, c in keys})}'
    summary = dict(**{side: generators[side].identity()['network'] for side in SIDES},
        reward_model=reward_path and os.path.abspath(reward_path), seeds=described)
    summary['reward'] = reward_change(rewards['original'], rewards['tuned'])
    measures = {side: collateral.measure(slabs[side], taste_grid)
        for side in tqdm(SIDES, desc='collateral', unit='generator')}
    summary['collateral'] = collateral.report(slabs['original'], slabs['tuned'], taste_grid, generators['original'],
        trained=taste, measures=(measures['original'], measures['tuned']))
    with atomic_write(os.path.join(outdir, 'measures.json'), 'w') as f:   # Per sample: other runs compare with it.
        json.dump(dict(ids=[generators['original'].sample_id(s, c) for s, c in keys], **measures), f)
    summary = dict(alarm=collateral.alarm(summary['collateral'], summary['reward']['mean_delta']), **summary)
    if flows:
        summary['stage_consistency'] = stage_consistency(ious, [c for _, c in keys])
        summary['diversity'] = {side: flow_quality.diversity(slabs[side], [c for _, c in keys]) for side in SIDES}
        spread = summary['diversity']['original']['all']          # 0 with one sample per condition: no ratio.
        summary['diversity']['ratio_all'] = summary['diversity']['tuned']['all'] / spread if spread else None
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
    summary['before_after_rows'] = save_before_after(keys, slabs, measures, taste_grid, outdir)
    pictures = ['before_after.png', 'orbit.gif', 'reward_histograms.png', 'reward_deltas.png', 'reward_scatter.png',
        'images.png', 'geometry.png']
    if flows:
        report_plots.plot_scatter(ious['original'], ious['tuned'], fit_slope(ious['original'], ious['tuned']),
            out('stage_consistency.png'), labels=('original structure IoU', 'tuned structure IoU'))
        pictures.append('stage_consistency.png')
    tables = collateral.tables(summary['collateral'])
    if view_samples and all(hasattr(G, 'camera_views') for G in generators.values()):
        rows, maps = view_geometry.view_changes(generators, [s for s, _ in keys][:view_samples])
        summary['views'] = rows
        view_geometry.save_views(maps, view_geometry.YAWS, out('views.png'))
        pictures.append('views.png')
        tables.append(view_geometry.table(rows))
    report_plots.write_report(outdir, 'Tuned vs original', summary, pictures, tables=tables, headline=headline(summary))
    return summary


def headline(summary):
    """The report's headline block: what was compared, the reward's change and the trained taste's result."""
    rc, pref = summary['reward'], summary['preference']
    rows = [('Generators', f'original {summary["original"]}; tuned {summary["tuned"]}'),
        ('Samples', summary['seeds']),
        ('Reward', f'{summary["reward_model"] or "given"}: mean {rc["mean_before"]:.3f} -> {rc["mean_after"]:.3f} '
            f'({rc["rose"]} of {rc["seeds"]} samples rose)')]
    if isinstance(pref, dict):
        rows.append(('Trained taste', f'{pref["source"]}: tuned preferred in {pref["wins"]} of {pref["pairs"]} pairs '
            f'({pref["losses"]} original, {pref["ties"]} ties), binomial p {pref["binomial_p"]:.2g}'))
    return rows

#----------------------------------------------------------------------------
