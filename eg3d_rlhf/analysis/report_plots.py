"""PNG plots and a small HTML page for reports: reward trajectories, before/after histograms, deltas, slope scatter, losses."""

import html
import json
import os

import numpy as np

import dnnlib


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    with dnnlib.util.atomic_write(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=110, bbox_inches='tight')
    _pyplot().close(fig)

#----------------------------------------------------------------------------

def plot_trajectories(kimg, rewards, path, title='Reward of each panel seed during fine-tuning'):
    """rewards [ticks, seeds] against kimg: one thin line per seed, the mean in bold (the paper's Figure 8)."""
    plt = _pyplot()
    rewards = np.asarray(rewards)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(kimg, rewards, color='tab:blue', alpha=0.15, linewidth=0.8)
    ax.plot(kimg, rewards.mean(axis=1), color='black', linewidth=2, label=f'mean of {rewards.shape[1]} seeds')
    ax.set(xlabel='kimg', ylabel='reward', title=title)
    ax.legend(loc='best')
    _save(fig, path)


def plot_histograms(before, after, path, labels=('before', 'after')):
    """Overlaid reward histograms of the same seeds before and after."""
    plt = _pyplot()
    before, after = np.asarray(before), np.asarray(after)
    bins = np.histogram_bin_edges(np.concatenate([before, after]), bins=30)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(before, bins=bins, alpha=0.6, label=f'{labels[0]} (mean {before.mean():.2f})')
    ax.hist(after, bins=bins, alpha=0.6, label=f'{labels[1]} (mean {after.mean():.2f})')
    ax.set(xlabel='reward', ylabel='seeds', title='Reward distribution')
    ax.legend(loc='best')
    _save(fig, path)


def plot_deltas(before, after, path):
    """Per-seed reward change, sorted, rises in green and falls in red."""
    plt = _pyplot()
    delta = np.sort(np.asarray(after) - np.asarray(before))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(np.arange(len(delta)), delta, width=1.0, color=np.where(delta > 0, 'tab:green', 'tab:red'))
    ax.axhline(0, color='black', linewidth=0.8)
    ax.set(xlabel='seeds, sorted', ylabel='reward change', title=f'{(delta > 0).sum()} of {len(delta)} seeds rose')
    _save(fig, path)


def plot_scatter(before, after, fit, path, labels=('initial reward', 'final reward')):
    """Final against initial reward per seed with the fitted line and y = x (the paper's Figure 9)."""
    plt = _pyplot()
    before, after = np.asarray(before), np.asarray(after)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(before, after, s=10, alpha=0.7)
    lo, hi = min(before.min(), after.min()), max(before.max(), after.max())
    ax.plot([lo, hi], [lo, hi], color='gray', linestyle='--', linewidth=1, label='y = x')
    if np.isfinite(fit['slope']):
        ax.plot([lo, hi], [fit['slope'] * lo + fit['intercept'], fit['slope'] * hi + fit['intercept']], color='tab:red',
            label=f'fit: slope {fit["slope"]:.2f}')
    ax.set(xlabel=labels[0], ylabel=labels[1], title='Final vs initial reward')
    ax.legend(loc='best')
    _save(fig, path)

#----------------------------------------------------------------------------

def html_table(title, header, rows):
    """An HTML table with a heading: header [str], rows [[str]]."""
    cells = lambda tag, row: '<tr>' + ''.join(f'<{tag}>{html.escape(str(c))}</{tag}>' for c in row) + '</tr>'
    return f'<h2>{html.escape(title)}</h2><table>{cells("th", header)}{"".join(cells("td", r) for r in rows)}</table>'


def process_costs():
    """(wall seconds since this process started, CPU seconds of it and its finished children, peak memory in bytes)."""
    import resource
    import time
    import psutil
    proc = psutil.Process()
    cpu = proc.cpu_times()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024      # Linux reports KiB.
    return time.time() - proc.create_time(), cpu.user + cpu.system + cpu.children_user + cpu.children_system, peak


def command_line():
    """The command that made this process, as typed: 'python train.py --reward=sigma ...' or 'eg3d-rlhf evaluate ...'."""
    import shlex
    import sys
    program = sys.argv[0]
    head = f'python {os.path.relpath(program)}' if program.endswith('.py') else os.path.basename(program)
    return ' '.join([head, *(shlex.quote(a) for a in sys.argv[1:])])


def headline_rows(headline):
    """The headline block's rows: the command, the caller's (label, text) pairs, then time and memory."""
    wall, cpu, peak = process_costs()
    rows = [('Command', command_line()), *headline,
        ('Cost', f'wall {dnnlib.util.format_time(wall)}, CPU {dnnlib.util.format_time(cpu)}, peak memory '
            f'{dnnlib.util.size_text(peak)} (this process so far)')]
    return ''.join(f'<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>' for k, v in rows)


def write_report(outdir, title, summary, pictures, name='report', tables=(), headline=()):
    """outdir/NAME.json (the summary) and outdir/NAME.html. The page opens with the summary's 'alarm' sentence (or,
    where it is None, that none was raised), the title and a headline block (the command, `headline`'s (label, text)
    pairs, wall and CPU time and peak memory); then the first picture at full width, the tables of (title, header,
    rows), the other pictures, and last, collapsed, every number of the summary."""
    with dnnlib.util.atomic_write(os.path.join(outdir, f'{name}.json'), 'w', encoding='utf-8') as f:
        json.dump(dnnlib.util.json_safe(summary), f, indent=2, allow_nan=False)
        f.write('\n')
    rows = []

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f'{prefix}{k}.', v)
        else:
            shown = f'{value:.4g}' if isinstance(value, float) else value if isinstance(value, str) else json.dumps(value)
            rows.append(f'<tr><td>{html.escape(prefix[:-1])}</td><td>{html.escape(shown)}</td></tr>')
    walk('', summary)
    figure = lambda p, wide=False: (f'<figure{" class=wide" if wide else ""}><img src="{html.escape(p)}" '
        f'alt="{html.escape(p)}"><figcaption>{html.escape(p)}</figcaption></figure>')
    page = (f'<!doctype html><meta charset="utf-8"><title>{html.escape(title)}</title>'
        '<style>body{font-family:sans-serif;margin:1em 2em}td,th{padding:2px 12px;border-bottom:1px solid #ddd;'
        'text-align:left;vertical-align:top}table.headline th{white-space:nowrap}figure{display:inline-block;margin:8px}'
        'img{max-width:560px}figure.wide img{max-width:100%;max-height:60vh}h1{margin:0.3em 0}</style>'
        + (f'<p class="alarm" style="color:#b00000;font-weight:bold">{html.escape(summary["alarm"])}</p>'
            if summary.get('alarm') else '<p class="alarm">No reward-hacking alarm: no simulated taste prefers the '
            'original significantly (binomial p &lt; 0.05).</p>' if 'alarm' in summary else '')
        + f'<h1>{html.escape(title)}</h1><table class="headline">{headline_rows(headline)}</table>'
        + (figure(pictures[0], wide=True) if pictures else '')
        + ''.join(html_table(*t) for t in tables) + ''.join(figure(p) for p in pictures[1:])
        + f'<details><summary>Every number ({html.escape(name)}.json)</summary><table>{"".join(rows)}</table></details>\n')
    with dnnlib.util.atomic_write(os.path.join(outdir, f'{name}.html'), 'w', encoding='utf-8') as f:
        f.write(page)

#----------------------------------------------------------------------------

def plot_training_curves(records, path):
    """A reward model's training, side by side: per epoch, mean training loss and validation pairwise accuracy (the
    records rewards.fitting.RewardFitter logs, TRL names 'loss', 'eval_rewards/accuracies'); or, for linear heads
    solved per L2 penalty (rewards.linear_heads, records with 'l2'), validation NLL and accuracy against the penalty.
    Records tagged with 'mirror' (an automatic choice fitted both ways) draw one line per way."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    ways = sorted({r.get('mirror') for r in records}, key=lambda m: (m is None, not m))
    for way, style in zip(ways, ('-', '--')):
        part = [r for r in records if r.get('mirror') == way]
        label = None if way is None else ('mirrored' if way else 'plain')
        if any('l2' in r for r in records):
            grid = [r for r in part if 'l2' in r]
            a.plot([r['l2'] for r in grid], [r['eval_loss'] for r in grid], marker='o', linestyle=style, label=label)
            b.plot([r['l2'] for r in grid], [r['eval_rewards/accuracies'] for r in grid], marker='o', linestyle=style,
                color='tab:green', label=label)
        else:
            train = [r for r in part if 'loss' in r]
            val = [r for r in part if 'eval_rewards/accuracies' in r]
            a.plot([r['epoch'] for r in train], [r['loss'] for r in train], marker='o', linestyle=style, label=label)
            b.plot([r['epoch'] for r in val], [r['eval_rewards/accuracies'] for r in val], marker='o', linestyle=style,
                color='tab:green', label=label)
    if any('l2' in r for r in records):
        a.set(xscale='log', xlabel='L2 penalty', ylabel='validation NLL')
        b.set(xscale='log', xlabel='L2 penalty', ylabel='validation pairwise accuracy', ylim=(0, 1))
    else:
        a.set(xlabel='epoch', ylabel='training loss')
        b.set(xlabel='epoch', ylabel='validation pairwise accuracy', ylim=(0, 1))
    if any(w is not None for w in ways):
        a.legend(), b.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_fraction_histogram(fractions, threshold, path):
    """Histogram of each sample's largest-component share of the surface, the one-head threshold marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(fractions, bins=np.linspace(0, 1, 21), color='tab:blue')
    ax.axvline(threshold, color='tab:red', linestyle='--', label=f'threshold {threshold:g}')
    ax.set(xlabel='largest component / surface area', ylabel='samples')
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_losses(records, path, smooth=50):
    """Training losses per step ('loss/<name>' keys of stats records), raw and as a running mean of `smooth` steps."""
    plt = _pyplot()
    names = sorted({k for r in records for k in r if k.startswith('loss/')})
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        steps = np.array([r['step'] for r in records if name in r])
        values = np.array([r[name] for r in records if name in r])
        ax.plot(steps, values, color='tab:blue', alpha=0.3, linewidth=0.8)
        if len(values) >= smooth:
            ax.plot(steps[smooth - 1:], np.convolve(values, np.ones(smooth) / smooth, mode='valid'), color='tab:blue')
        ax.set(xlabel='step', ylabel=name, title=name.split('/', 1)[1])
    fig.tight_layout()
    _save(fig, path)

def plot_dpo_curves(records, path, smooth=10):
    """Each training phase's loss, rewards/accuracies and rewards/margins per step ('step' records of a Circular-DPO
    run's stats.jsonl; supervised phases have the loss only), as running means of `smooth` steps."""
    plt = _pyplot()
    steps = [r for r in records if r.get('kind') == 'step']
    phases = list(dict.fromkeys(r['phase'] for r in steps))
    names = ['loss', 'rewards/accuracies', 'rewards/margins']
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for phase in phases:
        mine = [r for r in steps if r['phase'] == phase]
        for ax, name in zip(axes, names):
            values = np.array([r[name] for r in mine if name in r])
            if len(values) == 0:
                continue
            k = min(smooth, len(values))
            ax.plot(np.arange(k - 1, len(values)), np.convolve(values, np.ones(k) / k, mode='valid'),
                label=f'{phase} ({mine[0]["stage"]}, {mine[0]["method"]})')
    for ax, name in zip(axes, names):
        ax.set(xlabel='step', title=name)
    axes[0].legend(fontsize=7, loc='best')
    fig.tight_layout()
    _save(fig, path)


def plot_grpo_curves(records, path):
    """Flow-GRPO per iteration ('grpo' records of its stats.jsonl): the drawn samples' reward (median and quartiles, the
    mean dashed: one odd sample moves the mean alone) and the KL to the reference; the share of clipped ratios when any
    ratio was clipped (online DPO: its loss and implicit-reward accuracy instead of the KL; the online unpaired
    objectives: their loss and mean implicit reward)."""
    plt = _pyplot()
    rows = [r for r in records if r.get('kind') == 'grpo']
    it = np.array([r['iteration'] for r in rows])
    has = lambda name: any(name in r for r in rows)
    names = (['kl', 'clipfrac'] if has('clipfrac') else ['loss', 'rewards/accuracies'] if has('rewards/accuracies')
        else ['loss', 'rewards'])                       # Flow-GRPO's, online DPO's, online DRO's and KTO's.
    if names[1] == 'clipfrac' and not any(r.get('clipfrac') for r in rows):
        names = names[:1]                               # One on-policy step per iteration never clips.
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(4.7 * (1 + len(names)), 3.8))
    median = np.array([r['reward_median'] for r in rows])
    axes[0].plot(it, median, 'o-', color='tab:orange', label='median')
    axes[0].fill_between(it, [r['reward_q25'] for r in rows], [r['reward_q75'] for r in rows], color='tab:orange',
        alpha=0.2, label='quartiles')
    axes[0].plot(it, [r['reward_mean'] for r in rows], ':', color='grey', label='mean')
    low, high = min(r['reward_q25'] for r in rows), max(r['reward_q75'] for r in rows)
    axes[0].set_ylim(low - 0.5 * (high - low + 1e-9), high + 0.5 * (high - low + 1e-9))   # The quartiles, not outliers.
    axes[0].set(xlabel='iteration', title='reward of the drawn samples')
    axes[0].legend(fontsize=7)
    for ax, name in zip(axes[1:], names):
        ax.plot(it, [r.get(name, np.nan) for r in rows], 'o-')
        ax.set(xlabel='iteration', title='rewards (mean implicit reward)' if name == 'rewards' else name)
    fig.tight_layout()
    _save(fig, path)


def plot_bridge_weights(bridges, path):
    """Step 2 of Circular-DPO: the quality gaps w1 of all (tuned, reference) pairs with tau marked, and the
    reliability weights w2 of the kept pairs, one colour per bridge record."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in bridges:
        label = f'{r["phase"].split("/")[-1]}: kept {r["kept"]} of {r["pairs"]}'
        a.hist(r['w1'], bins=np.linspace(-1, 1, 41), alpha=0.5, label=label)
        b.hist(r['w2'], bins=30, alpha=0.5, label=label)
    a.axvline(bridges[0]['tau'], color='black', linestyle='--', linewidth=1)
    a.set(xlabel='w1 = G(tuned) - G(reference)', ylabel='pairs', title='quality gap (dropped at or left of tau)')
    b.set(xlabel='w2', ylabel='kept pairs', title='reliability weight (mean 1)')
    a.legend(fontsize=7, loc='best')
    fig.tight_layout()
    _save(fig, path)


def plot_collateral(rows, path):
    """Per group, every taste's win rate over the base at temperature 0 with its Wilson 95% interval, chance marked
    (rows: Circular-DPO's ablation rows with their 'collateral')."""
    plt = _pyplot()
    tastes = list(rows[0]['collateral'])
    fig, ax = plt.subplots(figsize=(2.8 + 1.1 * len(rows), 3.8))
    width = 0.8 / len(tastes)
    for k, taste in enumerate(tastes):
        x = np.arange(len(rows)) + (k - (len(tastes) - 1) / 2) * width
        c = [r['collateral'][taste] for r in rows]
        rate = np.array([v['win_rate'] for v in c], dtype=float)
        low, high = (np.array([v['wilson95'][i] for v in c], dtype=float) for i in (0, 1))
        ax.bar(x, np.nan_to_num(rate, nan=0.5), width, label=taste)
        ax.errorbar(x, np.nan_to_num(rate, nan=0.5), yerr=[np.nan_to_num(rate - low), np.nan_to_num(high - rate)],
            fmt='none', color='black', capsize=2)
    ax.axhline(0.5, color='tab:red', linestyle='--', linewidth=1)
    ax.set(xticks=np.arange(len(rows)), xticklabels=[r['group'] for r in rows], ylim=(0, 1),
        ylabel='tuned preferred (temperature 0)', title='Every taste, held-out pairs')
    ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.0, 0.5))     # Beside the bars, never over one.
    fig.tight_layout()
    _save(fig, path)


def plot_win_rates(rows, path):
    """Win rate of each group over the base model with its Wilson 95% interval, chance marked."""
    plt = _pyplot()
    rows = [r for r in rows if 'win_rate' in r]
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(rows), 3.8))
    x = np.arange(len(rows))
    rate = np.array([r['win_rate'] for r in rows], dtype=float)
    low, high = (np.array([r['wilson95'][i] for r in rows], dtype=float) for i in (0, 1))
    ax.bar(x, rate, color='tab:blue')
    ax.errorbar(x, rate, yerr=[rate - low, high - rate], fmt='none', color='black', capsize=3)
    ax.axhline(0.5, color='tab:red', linestyle='--', linewidth=1)
    ax.set(xticks=x, xticklabels=[r['group'] for r in rows], ylim=(0, 1), ylabel='preferred to the base',
        title='Simulated annotator, held-out pairs')
    fig.tight_layout()
    _save(fig, path)


def plot_pair_sweep(rows, path):
    """The pairwise sweep (finetune/pair_sweep.py): panel change and change per CPU minute against tau, a line per
    pair construction (repeated seeds: their mean, each seed a dot)."""
    plt = _pyplot()
    taus = sorted({r['tau'] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, label in zip(axes, ('panel_change', 'change_per_cpu_min'), ('panel mean change', 'change per CPU minute')):
        for construction in dict.fromkeys(r['construction'] for r in rows):
            mine = [r for r in rows if r['construction'] == construction]
            x = [taus.index(t) for t in sorted({r['tau'] for r in mine})]
            y = [np.mean([r[key] for r in mine if r['tau'] == taus[i]]) for i in x]
            line, = ax.plot(x, y, marker='o', label=construction)
            ax.scatter([taus.index(r['tau']) for r in mine], [r[key] for r in mine], s=10, color=line.get_color())
        ax.axhline(0, color='grey', linewidth=0.8)
        ax.set(xticks=range(len(taus)), xticklabels=[f'{t:g}' for t in taus], xlabel='tau', ylabel=label)
    axes[0].legend(fontsize=8, title='pairs')
    fig.suptitle('Pairwise (DreamDPO) term: pair construction x tau')
    fig.tight_layout()
    _save(fig, path)
