"""Over-optimisation shown: a weak proxy from few judgements, pushed long, with the mean and conservative aggregates."""

import json
import os
import subprocess
import sys

import numpy as np

import dnnlib
from eg3d_rlhf.analysis import overoptimization, report_plots, reward_fit
from eg3d_rlhf.finetune.options import RunError
from eg3d_rlhf.synthetic import demo

#----------------------------------------------------------------------------
# The steps, each a child process whose output goes to a log beside what it writes, each skipped when its output
# exists (so a stopped sweep resumes where it stopped):
#   1. bank       tools/sample_bank.py: the bundled generator's seeds `bank_seeds` at `res` (a flow's under each of its
#                 conditions)
#   2. labels     tools/annotate.py pairs: `judgements` judgements of the simulated taste (temperature 0.5); a flow's
#                 pairs are two samples of one condition, as Flow-DPO and the flow rewards compare them
#   3. proxy      tools/train_reward.py: the default sigma reward (an ensemble of 8 bootstrap members) on them
#   4. runs       one per (aggregate, training seed), with the gold taste scored along the way (no collateral: the gold
#                 taste is the measure here). EG3D: train.py --reward=sigma --reward-model=proxy --gold-taste=TASTE,
#                 `kimg` long at `lambda_r`, its panel every `tick` kimg on `panel_seeds`. Flow: Flow-GRPO
#                 (train.py --generator=flow --method=grpo) for `iterations`, probing `panel_seeds` under every
#                 condition every `probe_every` iterations.
# Each run's report (EG3D: reward_report.json; flow: report.json) holds its curves (proxy, gold, distance per tick or
# probe). The sweep's overoptimization.json / .md / .png put them side by side: per run the gold's peak (observed and
# fitted), its loss from the peak at the end, the proxy's gain; per training seed each conservative aggregate's end
# gold against the mean's at equal steps.

NETWORKS = dict(eg3d='bundled', flow='bundled-flow')

TRAIN_PY = os.path.join(demo.ROOT, 'train.py')
TOOL = lambda name: os.path.join(demo.ROOT, 'tools', f'{name}.py')


def child(args, log):
    """Run a Python child writing its output to `log`; RunError naming the log when it fails."""
    with open(log, 'w', encoding='utf-8') as f:
        code = subprocess.run([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0:
        script = next((a for a in args if a.endswith('.py')), args[0])          # Past a launcher's flags.
        raise RunError(f'{os.path.basename(script)} exited with {code}; see {log}')


def proxy(outdir, taste='nose', judgements=200, bank_seeds='0-299', res=64, label_seed=0, generator='eg3d'):
    """The weak proxy's checkpoint: bank, labels and reward made in outdir unless there already."""
    bank, labels, reward = (os.path.join(outdir, name) for name in ('bank', 'labels.jsonl', 'proxy.safetensors'))
    if not os.path.isfile(os.path.join(bank, 'bank.json')):
        child([TOOL('sample_bank'), '--network', NETWORKS[generator], '--seeds', bank_seeds, '--res', str(res),
            '--outdir', bank], os.path.join(outdir, 'bank.log'))
    if not os.path.isfile(labels):
        child([TOOL('annotate'), 'pairs', '--bank', bank, '--annotator', f'oracle:{taste}', '--pairs', str(judgements),
            '--temperature', '0.5', '--seed', str(label_seed), '--out', labels,
            *(['--same-condition'] if generator == 'flow' else [])], os.path.join(outdir, 'labels.log'))
    if not reward_fit.finished(reward):                 # A fit stopped part-way: its files are this sweep's own.
        child([TOOL('train_reward'), '--bank', bank, '--labels', labels, '--reward', 'sigma', '--out', reward,
            '--force'], os.path.join(outdir, 'proxy.log'))
    return reward


def run(outdir, reward, aggregate, seed, taste='nose', kimg=2.0, tick=0.1, lambda_r=10.0, aggregate_lambda=1.0,
        panel_seeds='3000-3063', extra=(), generator='eg3d', iterations=24, probe_every=2):
    """One fine-tuning run (skipped when its report exists); the summary of its report's proxy_gold rows, made again
    by this code (a run written by an older version reads as a new one would)."""
    name = f'{aggregate}-seed{seed}'
    parent = os.path.join(outdir, 'runs', name)
    kept = 'report.json' if generator == 'flow' else 'reward_report.json'
    report = lambda: [os.path.join(parent, d, kept) for d in sorted(os.listdir(parent))
        if os.path.isfile(os.path.join(parent, d, kept))] if os.path.isdir(parent) else []
    if not report():
        os.makedirs(parent, exist_ok=True)
        common = [f'--reward-model={reward}', f'--seed={seed}', f'--gold-taste={taste}',
            f'--reward-aggregate={aggregate}', f'--outdir={parent}']
        if generator == 'flow':
            args = [TRAIN_PY, '--generator=flow', '--method=grpo', *common, f'--grpo-iterations={iterations}',
                f'--probe-every={probe_every}', f'--probe-seeds={panel_seeds}', '--eval-seeds=none', *extra]
        else:
            args = [TRAIN_PY, '--reward=sigma', *common, f'--lambda-r={lambda_r:g}', f'--kimg={kimg:g}',
                f'--tick={tick:g}', f'--panel-seeds={panel_seeds}', '--collateral-seeds=0', '--snap=1000', *extra]
        if aggregate in ('mean-std', 'uwo'):
            args.append(f'--aggregate-lambda={aggregate_lambda:g}')
        child(args, parent + '.log')
    with open(report()[-1], encoding='utf-8') as f:
        rows = json.load(f)['proxy_gold']['rows']
    return dict(overoptimization.Curves(rows).summary(), rows=rows)

def keep_settings(outdir, settings, free=(), added=None):
    """Write outdir/settings.json the first time; RunError when a later call into it asks for other settings (what
    the folder holds was made with its own: a sweep's bank, proxy and runs, a rounds run's rounds). The `free` keys
    may change (more rounds, more training seeds): the file then takes the new values. `added`: {key: value} of
    settings a tool added later, which a file without them was made with."""
    path = os.path.join(outdir, 'settings.json')
    settings = json.loads(json.dumps(settings))
    if os.path.isfile(path):
        kept = {**(added or {}), **dnnlib.util.read_json_object(path, error=RunError)}
        given = {**(added or {}), **settings}
        changed = sorted(k for k in set(kept) | set(given) if kept.get(k) != given.get(k))
        fixed = [k for k in changed if k not in free]
        if fixed:
            raise RunError(f'{path}: this folder holds a run with other settings ({", ".join(fixed)}); use another '
                '--outdir')
        if not changed:
            return
    os.makedirs(outdir, exist_ok=True)
    with dnnlib.util.atomic_write(path, 'w', encoding='utf-8') as f:
        json.dump(settings, f, indent=1)

#----------------------------------------------------------------------------
# The sweep's summary.

def describe(pg):
    """One run's numbers: gold's peak (observed, fitted), its end, the proxy's end, in sd of the start (the panel's)."""
    gain, d = np.asarray(pg['gold_gain']), np.asarray(pg['distance'])
    peak = pg['observed_peak']
    fit = pg['fit']
    return dict(end_gold=float(gain[-1]), peak_gold=peak['gain'], peak_kimg=peak['kimg'], peak_distance=peak['distance'],
        fitted_peak_distance=None if fit.get('beyond_run') else fit['peak_distance'], fit_r2=fit['r2'], end_distance=float(d[-1]),
        end_proxy=pg['proxy_gain'][-1], lost_from_peak=float((peak['gain'] - gain[-1]) / peak['gain'])
        if peak['gain'] > 0 else None, gold_stop_kimg=pg['gold_stop_kimg'],
        fitted_at_stop=(pg.get('fit_at_stop') or {}).get('peak_distance'),
        disagreement_stop_kimg=pg['disagreement_stop_kimg'])


def compare(runs, baseline='mean'):
    """Per conservative aggregate: per training seed its end gold and peak gold against the baseline's, the count of
    seeds where it ends higher, and Wilcoxon's p over the seeds (scipy; None with fewer than 2 seeds)."""
    from scipy import stats
    out = {}
    base = {r['seed']: r for r in runs if r['aggregate'] == baseline}
    for agg in sorted({r['aggregate'] for r in runs} - {baseline}):
        pairs = [(r, base[r['seed']]) for r in runs if r['aggregate'] == agg and r['seed'] in base]
        diff = [a['end_gold'] - b['end_gold'] for a, b in pairs]
        out[agg] = dict(seeds=[a['seed'] for a, _ in pairs], end_gold_minus_mean=diff,
            higher=sum(x > 0 for x in diff), peak_ratio=[a['peak_gold'] / b['peak_gold'] if b['peak_gold'] > 0 else None
            for a, b in pairs], wilcoxon_p=float(stats.wilcoxon(diff).pvalue) if len(diff) >= 2 and any(diff) else None)
    return out


def axis_scales(runs):
    """{'distance': x, 'proxy': x}: x is None for a linear axis, else the linear range of a symlog one. Distance turns
    logarithmic past the median end when one run ended 5x as far; the proxy past 1 sd when one ran beyond 50 sd."""
    ends = [r['curves']['distance'][-1] for r in runs if len(r['curves']['distance'])]
    median = float(np.median(ends)) if ends else 0.0
    far = bool(ends) and median > 0 and max(ends) > 5 * median
    proxy = max((abs(v) for r in runs for v in r['curves']['proxy_gain']), default=0.0)
    return dict(distance=median if far else None, proxy=1.0 if proxy > 50 else None)


def plot(runs, path, taste, generator='eg3d'):
    """Gold (top) and proxy (bottom, its own scale: a proxy can run away by hundreds of sd) gains against distance,
    one line per run named by its seed at its end, a colour per aggregate, a dot at each gold's peak; the pooled fit
    of the mean runs' gold dashed where it has a peak."""
    plt = report_plots._pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw=dict(height_ratios=(3, 2)))
    colours = dict(zip(sorted({r['aggregate'] for r in runs}, key=lambda a: a != 'mean'), plt.cm.tab10.colors))
    for r in runs:
        c, pg = colours[r['aggregate']], r['curves']
        top.plot(pg['distance'], pg['gold_gain'], '-', color=c, alpha=0.8, linewidth=1.2)
        bottom.plot(pg['distance'], pg['proxy_gain'], ':', color=c, alpha=0.8, linewidth=1.2)
        peak = int(np.argmax(pg['gold_gain']))
        top.plot([pg['distance'][peak]], [pg['gold_gain'][peak]], 'o', color=c, markersize=4)     # Its gold's peak.
        for ax, key in ((top, 'gold_gain'), (bottom, 'proxy_gain')):
            ax.annotate(f'seed {r["seed"]}', (pg['distance'][-1], pg[key][-1]), xytext=(3, 0),
                textcoords='offset points', fontsize=7, color=c, va='center')
    mean_runs = [r['curves'] for r in runs if r['aggregate'] == 'mean']
    if mean_runs:
        d = np.concatenate([pg['distance'] for pg in mean_runs])
        fit = overoptimization.fit_gold(d, np.concatenate([pg['gold_gain'] for pg in mean_runs]))
        if fit['alpha'] is not None and fit['peak_distance'] is not None:     # A fit without a peak: not drawn.
            x = np.linspace(0, d.max(), 200)
            top.plot(x, overoptimization.predict(x, fit['alpha'], fit['beta'], fit['form']), '--', color='black',
                linewidth=2, label=f'gold fit of the mean runs: d({fit["alpha"]:.3g} - {fit["beta"]:.3g} '
                f'{"log d" if fit["form"] == "rl" else "d"})')
    for agg, c in colours.items():
        top.plot([], [], '-', color=c, label=f'{agg}: gold ({taste})')
        bottom.plot([], [], ':', color=c, label=f'{agg}: proxy (members\' mean)')
    for ax in (top, bottom):
        ax.axhline(0, color='grey', linewidth=0.8)
        ax.legend(fontsize=8, loc='best')
    scales = axis_scales(runs)
    if scales['distance'] is not None:                                  # One run went far: keep the rest readable.
        top.set_xscale('symlog', linthresh=scales['distance'])
    if scales['proxy'] is not None:
        bottom.set_yscale('symlog', linthresh=scales['proxy'])
    top.set(ylabel='gold gain (sd of the start)', title='A weak proxy pushed long: gold and proxy against distance')
    bottom.set(xlabel='distance from the start (' + ('RMS velocity change from the base, stages summed' if generator
        == 'flow' else 'slab RMS of raw sigma') + ')' + ('; logarithmic past ' + f'{scales["distance"]:.3g}' if
        scales['distance'] is not None else ''), ylabel='proxy gain (sd of the start)' + (', logarithmic past 1' if
        scales['proxy'] is not None else ''))
    report_plots._save(fig, path)


def write(outdir, runs, settings):
    """overoptimization.json, .md and .png in outdir, atomically; returns the summary."""
    summary = dict(settings=settings, runs=[{k: v for k, v in r.items() if k != 'curves'} for r in runs],
        compare=compare(runs))
    plot(runs, os.path.join(outdir, 'overoptimization.png'), settings['taste'], settings.get('generator', 'eg3d'))
    with dnnlib.util.atomic_write(os.path.join(outdir, 'overoptimization.json'), 'w', encoding='utf-8') as f:
        json.dump(dict(summary, curves={f'{r["aggregate"]}-seed{r["seed"]}': r['curves'] for r in runs}), f, indent=1)
    fmt = lambda v: '-' if v is None else f'{v:.3g}' if isinstance(v, float) else str(v)
    cols = ('aggregate', 'seed', 'peak_gold', 'peak_kimg', 'peak_distance', 'fitted_peak_distance', 'end_gold',
        'lost_from_peak', 'end_proxy', 'gold_stop_kimg', 'fitted_at_stop', 'disagreement_stop_kimg')
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + ' --- |' * len(cols)]
    lines += ['| ' + ' | '.join(fmt(r[c]) for c in cols) + ' |' for r in summary['runs']]
    for agg, c in summary['compare'].items():
        lines.append(f'\n{agg} ends with more gold than mean in {c["higher"]} of {len(c["seeds"])} seeds '
            f'(Wilcoxon p {fmt(c["wilcoxon_p"])}); peak gold / mean\'s: {", ".join(fmt(x) for x in c["peak_ratio"])}')
    with dnnlib.util.atomic_write(os.path.join(outdir, 'overoptimization.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    return summary

#----------------------------------------------------------------------------
