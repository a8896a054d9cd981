"""A guidance sweep: the samples at each value of a knob (guidance scale, lr, ...) against the unguided ones, one report."""

import os
import time

import numpy as np

from eg3d_rlhf.analysis import collateral, report_plots
from eg3d_rlhf.analysis.compare import compare
from eg3d_rlhf.data.bank import passes
from eg3d_rlhf.generators.base import sample_id
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_grid
from eg3d_rlhf.guidance import flow_guidance
from eg3d_rlhf.guidance.inverted import InvertedEG3D

#----------------------------------------------------------------------------
# Files written into outdir:
#   KNOB-S/             tools/evaluate.py's report of the samples guided at KNOB = S (e.g. scale-0.05/) against the
#                       unguided ones
#   sweep.png           reward change, annotator win rate (Wilson 95%) and PSNR against the knob
#   strip.png           front and profile previews of the first STRIP_SAMPLES samples at every value (and unguided),
#                       where a person sees reward hacking begin
#   report.json/.html   the table below (with every value's collateral) and the settings; its first line names the
#                       values whose reward rose at a taste's cost (analysis/collateral.py's alarm)

STRIP_SAMPLES = 4
STRIP_RES = 96


def row_of(value, summary, seconds, samples):
    """One line of the sweep table from compare()'s summary."""
    row = dict(value=value, seconds_per_sample=seconds / samples, reward_mean_delta=summary['reward']['mean_delta'],
        reward_rose=summary['reward']['rose'], psnr_db=summary['images']['mean_psnr_db'],
        min_psnr_db=summary['images']['min_psnr_db'], ssim=summary['images']['mean_ssim'], **collateral.row_entries(summary))
    if isinstance(summary['preference'], dict):
        p = summary['preference']
        row.update(wins=p['wins'], losses=p['losses'], ties=p['ties'], win_rate=p['win_rate'], wilson95=p['wilson95'],
            binomial_p=p['binomial_p'])
    return row


def sweep(guided_at, unguided, values, reward, seeds, outdir, settings, knob='scale', taste=None, temperature=0.5,
        annotator_res=128, conditions=None, reward_path=None, log=print):
    """Compare guided_at(value) (a Generator3D) with `unguided` for every value of the knob (e.g. the guidance scale),
    then write the sweep's pictures and report; returns the table's rows. `settings` (a dict) goes into the report."""
    keys = unguided.keys(seeds, conditions)
    rows = []
    for value in values:
        start = time.perf_counter()
        summary = compare(dict(original=unguided, tuned=guided_at(value)), reward, seeds, os.path.join(outdir, f'{knob}-{value:g}'),
            taste=taste, temperature=temperature, annotator_res=annotator_res, reward_path=reward_path, conditions=conditions)
        rows.append(row_of(value, summary, time.perf_counter() - start, len(keys)))
        log(describe(rows[-1], knob))
    grid = slab_grid(annotator_res, cube_length=unguided.cube_length, crop=SlabCrop())
    generators = [unguided] + [guided_at(v) for v in values]
    preview.save_picture(strip(generators, keys[:STRIP_SAMPLES], grid, ['unguided'] + [f'{knob} {v:g}' for v in values]),
        os.path.join(outdir, 'strip.png'))
    plot_sweep(rows, knob, os.path.join(outdir, 'sweep.png'))
    header = [knob, 'reward change', 'rose', 'win rate (Wilson 95%)', 'p', 'every taste at temperature 0: tuned preferred',
        'nose prominence change (world units)', 'PSNR dB (min)', 'SSIM', 's/sample']
    table = [[f'{r["value"]:g}', f'{r["reward_mean_delta"]:+.3f}', f'{r["reward_rose"]}/{len(keys)}', win_text(r),
        f'{r["binomial_p"]:.2g}' if 'binomial_p' in r else '-', *collateral.row_cells(r),
        f'{r["psnr_db"]:.1f} ({r["min_psnr_db"]:.1f})', f'{r["ssim"]:.3f}', f'{r["seconds_per_sample"]:.2f}'] for r in rows]
    alarms = [f'{knob} {r["value"]:g}: {r["alarm"]}' for r in rows if r['alarm']]
    summary = dict(alarm='; '.join(alarms) or None, settings=settings, knob=knob, samples=len(keys), rows=rows)
    report_plots.write_report(outdir, 'Reward guidance sweep', summary, ['sweep.png', 'strip.png'],
        tables=[(f'Guided against unguided, per {knob}', header, table)])
    return rows


def sampling_sweep(generator, reward, scales, seeds, outdir, guidance, network, reward_path, annotator='none', taste=None,
        temperature=0.5, annotator_res=128, conditions=None, log=print):
    """sweep() of reward-guided sampling (a generator with the 'guidance' capability) at each guidance scale against the
    unguided samples, each drawn once; guidance: RewardGuidance's settings besides score and scale; annotator: the
    --annotator text the report records (taste: its parsed taste, or None). Returns the table's rows."""
    generator.keep = max(generator.keep, len(generator.keys(seeds, conditions)))   # Unguided: drawn once for all scales.
    score = flow_guidance.slab_scorer(reward, generator.cube_length, generator.empty_sigma)
    make = lambda scale: flow_guidance.RewardGuidance(score, scale=scale, **guidance)
    guided = {s: flow_guidance.guided_generator(generator, make(s)) for s in scales}
    settings = dict(network=os.path.abspath(network), reward_model=os.path.abspath(reward_path),
        guidance=make(1.0).describe(), annotator=annotator, temperature=temperature)
    return sweep(guided.__getitem__, generator, scales, reward, seeds, outdir, settings, knob='scale', taste=taste,
        temperature=temperature, annotator_res=annotator_res, conditions=conditions, reward_path=reward_path, log=log)


def editing_sweep(generator, reward, knob, values, seeds, outdir, inversion, network, reward_path, annotator='none',
        taste=None, temperature=0.5, annotator_res=128, log=print):
    """sweep() of reward-guided latent editing (InvertedEG3D of a generator with the 'latents' capability) at each value
    of the knob ('lr', or 'weight': the reward weight); inversion: invert()'s other settings. Returns the rows."""
    argument = dict(lr='lr', weight='reward_weight')[knob]
    edited = {}

    def edited_at(value):
        if value not in edited:
            edited[value] = InvertedEG3D(generator, reward, **{argument: value}, **inversion)
        return edited[value]
    settings = dict(network=os.path.abspath(network), reward_model=os.path.abspath(reward_path), inversion=inversion,
        annotator=annotator, temperature=temperature)
    return sweep(edited_at, generator, values, reward, seeds, outdir, settings, knob=knob, taste=taste,
        temperature=temperature, annotator_res=annotator_res, reward_path=reward_path, log=log)


def win_text(row):
    if 'win_rate' not in row:
        return '-'
    low, high = row['wilson95']
    return f'{row["wins"]}/{row["wins"] + row["losses"]} = {100 * row["win_rate"]:.1f}% ({100 * low:.1f}-{100 * high:.1f}%)'


def describe(row, knob):
    return (f'{knob} {row["value"]:g}: reward {row["reward_mean_delta"]:+.3f}, preferred {win_text(row)}, '
        f'PSNR {row["psnr_db"]:.1f} dB, {row["seconds_per_sample"]:.2f} s/sample' + (f'\n{row["alarm"]}' if row['alarm'] else ''))

#----------------------------------------------------------------------------

def strip(generators, keys, grid, names):
    """Front and profile previews of `keys` (rows) by each generator (column pairs named `names`)."""
    views = preview.BEFORE_AFTER_VIEWS
    shown = []
    for G in generators:
        volumes = np.concatenate([G.sigma_grid(chunk, grid, condition).numpy() for condition, chunk in passes(keys, len(keys))])
        shown.append([preview.render_views(v, grid, views=views, resolution=STRIP_RES) for v in volumes])
    rows = [[shown[g][k][view] for g in range(len(generators)) for view in views] for k in range(len(keys))]
    return preview.labelled(rows, [sample_id(*k) for k in keys], [f'{name} {view}' for name in names for view in views])


def plot_sweep(rows, knob, path):
    """Reward change, win rate with its interval and PSNR (25 dB marked) against the knob (the guidance scale, ...)."""
    plt = report_plots._pyplot()
    values = [r['value'] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    axes[0].plot(values, [r['reward_mean_delta'] for r in rows], 'o-')
    axes[0].set(xlabel=knob, ylabel='mean reward change', title='Reward')
    decided = [r for r in rows if 'win_rate' in r]
    if decided:
        rate = np.array([r['win_rate'] for r in decided])
        low, high = (np.array([r['wilson95'][i] for r in decided]) for i in (0, 1))
        axes[1].errorbar([r['value'] for r in decided], rate, yerr=[rate - low, high - rate], fmt='o-', capsize=3)
        axes[1].axhline(0.5, color='tab:red', linestyle='--', linewidth=1)
    axes[1].set(xlabel=knob, ylabel='preferred to unguided', ylim=(0, 1), title='Simulated annotator')
    axes[2].plot(values, [r['psnr_db'] for r in rows], 'o-')
    axes[2].axhline(25, color='tab:red', linestyle='--', linewidth=1)
    axes[2].set(xlabel=knob, ylabel='PSNR to unguided (dB)', title='Image consistency')
    for ax in axes:
        ax.set_xscale('symlog', linthresh=min([v for v in values if v > 0] or [1]))
        ax.set_xticks(values, [f'{v:g}' for v in values])
        ax.minorticks_off()
    fig.tight_layout()
    report_plots._save(fig, path)
