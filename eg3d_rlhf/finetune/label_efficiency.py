"""Label efficiency: online rounds against one upfront round of the same or more judgements, over training seeds."""

import os
import shutil

import numpy as np

import dnnlib
from eg3d_rlhf.analysis import replication, report_plots
from eg3d_rlhf.finetune import rounds
from eg3d_rlhf.finetune.options import RunError
from eg3d_rlhf.finetune.overopt_sweep import keep_settings

#----------------------------------------------------------------------------
# Per training seed S (the runs' --seed: pair draws, annotator noise, fine-tuning), in seed-S/ of the folder:
#   rounds/      the online run: `rounds` rounds of `judgements`, each on a new bank of the current generator
#   upfront-U/   the offline run, for each total U of `upfront`: one round of U judgements on one bank of the start of
#                rounds x bank_size seeds (the same seeds the rounds draw, all from the start), tuned rounds times as
#                long in one go (EG3D: kimg; a flow: Circular-DPO's steps per stage)
# Round 0 of every run draws from the start, so a start bank of the same seeds is drawn once and linked into the
# other runs (hard links: a bank is never changed once whole). Every run's last generator meets the same held-out
# eval seeds under the noise-free gold taste. The contrast "rounds vs upfront-U" pairs the two runs' samples of each held-out id (the taste's choice: a win, a loss or a tie)
# and is tested across the training seeds (analysis/replication.py: per-seed share with the noise cluster as the
# unit, Wilcoxon over seeds, Holm over the U given). `matched`: the smallest U whose mean gold gain over the start
# across seeds reaches the rounds' (None: no U given did).

STEM = 'label-efficiency'


def arms(settings, upfront):
    """{name: settings} of one training seed's runs: the rounds as given, and an upfront run per total in `upfront`."""
    runs = {'rounds': dict(settings)}
    for total in upfront:
        runs[f'upfront-{total}'] = dict(settings, rounds=1, judgements=int(total),   # No check: all on one bank.
            bank_size=settings['rounds'] * settings['bank_size'], tune_scale=settings['rounds'], **rounds.ADDED)
    return runs


def link(source, target):
    """A hard link of a bank file, or a copy where the two paths lie on different file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def outcomes(first, second, where):
    """'win' | 'loss' | 'tie' per held-out id of two runs' last gold (gold.json), from the first run's view."""
    if first.get('ids') != second.get('ids') or len(first['scores']) != len(second['scores']):
        raise RunError(f'{where}: the two runs\' gold holds other held-out ids; delete the older gold.json to redo it')
    return ['win' if a > b else 'loss' if a < b else 'tie' for a, b in zip(first['scores'], second['scores'])]


def run(outdir, settings, train_seeds, upfront, progress=print, nproc=1):
    """Every run of every training seed (each resumable, as tools/rounds.py), then the comparison: returns the
    summary written to label-efficiency.json (with .md and the plots beside it)."""
    if rounds.people_name(settings['annotator'])[0]:
        raise RunError('a label-efficiency comparison needs a simulated annotator (oracle:NAME)')
    for flag, values in (('--train-seeds', train_seeds), ('--upfront', upfront)):
        if len(set(values)) != len(values):                     # Refused at once, not after every run.
            raise RunError(f'{flag} names {sorted(v for v in set(values) if list(values).count(v) > 1)[0]} twice; '
                'give each once')
    if min(upfront) < 1:                                        # Else found only when its reward has nothing to fit.
        raise RunError(f'--upfront {min(upfront)}: an upfront run needs at least one judgement')
    keep_settings(outdir, dict(settings, train_seeds=list(train_seeds), upfront=list(upfront)),   # Seeds and totals
        free=('train_seeds', 'upfront'), added=rounds.ADDED)     # may be added: the runs made already are kept.
    records, rows, drawn, held_out = [], [], {}, {}
    for seed in train_seeds:
        golds = {}
        for name, s in arms(dict(settings, seed=int(seed)), upfront).items():
            folder = os.path.join(outdir, f'seed-{seed}', name)
            keep_settings(folder, s, added=rounds.ADDED)
            start_bank = os.path.join(folder, 'round-0', 'bank')
            if s['bank_size'] in drawn and not os.path.isdir(start_bank):
                rounds.settle(start_bank, lambda tmp, source=drawn[s['bank_size']]: shutil.copytree(source, tmp,
                    copy_function=link))
            every = rounds.Rounds(folder, s, nproc=nproc, drawn=held_out).run()['rounds']   # The start drawn once.
            last = every[-1]
            drawn.setdefault(s['bank_size'], start_bank)
            golds[name] = last['gold']
            rows.append(dict(seed=int(seed), run=name, judgements=last['judgements'],
                win_rate=last['gold']['win_rate'], gain_sd=last['gold']['gain_sd'], collateral=last.get('collateral'),
                kept=[r['check']['kept'] for r in every if r.get('check')] or None,
                checks=[dict(reward=(r.get('check_reward') or {}).get('prefers_tuned'),
                    labels=r['check']['labels']['win_rate']) for r in every if r.get('check')] or None))
            progress(f'seed {seed}, {name}: {last["judgements"]} judgements, gold gain '
                f'{last["gold"]["gain_sd"]:+.2f} sd over the start')
        for total in upfront:
            other = f'upfront-{total}'
            records += replication.records(f'rounds vs {other}', seed, golds['rounds']['ids'],
                outcomes(golds['rounds'], golds[other], os.path.join(outdir, f'seed-{seed}')))
    table = replication.replicate(records)
    mean = {name: float(np.mean([r['gain_sd'] for r in rows if r['run'] == name])) for name in
        dict.fromkeys(r['run'] for r in rows)}
    matched = next((int(u) for u in sorted(upfront) if mean[f'upfront-{u}'] >= mean['rounds']), None)
    summary = dict(settings=settings, train_seeds=list(train_seeds), upfront=list(upfront), runs=rows,
        mean_gain_sd=mean, matched=matched, replication=table)
    replication.write(table, outdir, STEM + '-replication')
    plot(rows, settings, os.path.join(outdir, STEM + '.png'))
    with dnnlib.util.atomic_write(os.path.join(outdir, STEM + '.md'), 'w', encoding='utf-8') as f:
        f.write(describe(summary))
    return rounds.write_json(os.path.join(outdir, STEM + '.json'), summary)


def describe(summary):
    """label-efficiency.md: each run's gold gain per seed, the contrasts across seeds, the judgements that matched."""
    s, seeds = summary['settings'], summary['train_seeds']
    online = s['rounds'] * s['judgements']
    head = ['run', 'judgements', *[f'seed {x}' for x in seeds], 'mean']
    body = []
    for name, mean in summary['mean_gain_sd'].items():
        mine = {r['seed']: r for r in summary['runs'] if r['run'] == name}
        body.append([name, str(mine[seeds[0]]['judgements']), *[f'{mine[x]["gain_sd"]:+.2f}' for x in seeds],
            f'{mean:+.2f}'])
    matched = summary['matched']
    verdict = (f'The upfront run matched the rounds\' mean gold gain with {matched} judgements '
        f'({matched / online:.2g}x the rounds\' {online}).' if matched is not None else
        f'No upfront total given ({", ".join(map(str, summary["upfront"]))}) matched the rounds\' mean gold gain '
        f'with {online} judgements.')
    return ('# Label efficiency: online rounds against upfront labels\n\nGold gain over the start (sd of the start\'s '
        f'gold scores) of each run\'s last generator on the held-out seeds {s["eval_seeds"]}, taste '
        f'{s.get("gold_taste") or s["annotator"]}:\n\n' + replication.markdown_table(head, body) + f'\n{verdict}\n\n'
        'The rounds\' samples against each upfront run\'s on the same held-out ids, across training seeds:\n\n'
        + replication.markdown(summary['replication']) + '\nWhat else each run\'s last generator changed on the '
        'held-out samples, against the start:\n\n' + ''.join(f'- seed {r["seed"]}, {r["run"]}: {r["collateral"]}\n'
        for r in summary['runs'] if r.get('collateral')) + ''.join(f'- seed {r["seed"]}, {r["run"]}: the rounds\' '
        f'checks kept {", ".join(r["kept"])}{check_shares(r.get("checks"))}\n' for r in summary['runs'] if
        r.get('kept')))


def check_shares(checks):
    """The rounds' checks in words: the share of each round's check pairs where the reward it tuned on scored the tuned
    side higher, and where the labels chose it ('' for runs made before either was kept)."""
    pct = lambda v: '-' if v is None else f'{100 * v:.0f}%'
    if not checks or all(c['reward'] is None for c in checks):
        return ''
    return ('; the tuned side preferred by the reward it was tuned on / by the labels: ' +
        ', '.join(f'{pct(c["reward"])} / {pct(c["labels"])}' for c in checks))


def plot(rows, settings, path):
    """Gold gain over the start against the judgements spent: each seed's run a point, each run's mean a bar."""
    plt = report_plots._pyplot() # pylint: disable=protected-access
    fig, ax = plt.subplots(figsize=(7, 4.5))
    spent = sorted({r['judgements'] for r in rows})
    step = 0.04 * (max(spent) - min(spent) or max(spent))     # The rounds a little left of an upfront run as long.
    for name in dict.fromkeys(r['run'] for r in rows):
        mine = [r for r in rows if r['run'] == name]
        online = name == 'rounds'
        x, y = mine[0]['judgements'] + (-step if online else step), [r['gain_sd'] for r in mine]
        color = 'tab:orange' if online else 'tab:blue'
        ax.scatter([x] * len(y), y, marker='s' if online else 'o', color=color, alpha=0.6,
            label=f'{settings["rounds"]} rounds of {settings["judgements"]}' if online else None)
        ax.hlines(np.mean(y), x - step * 0.8, x + step * 0.8, color=color, linewidth=2)
    ax.scatter([], [], marker='o', color='tab:blue', alpha=0.6, label='upfront, one round')
    ax.set_xticks(spent)
    ax.set_xlim(min(spent) - 3 * step, max(spent) + 3 * step)    # Room for the points beside the first and last.
    ax.axhline(0, color='grey', linewidth=0.8)
    ax.set(xlabel='judgements spent', ylabel='gold gain over the start (sd)',
        title='Label efficiency (a point per training seed, a bar per mean)')
    ax.legend(fontsize=8, loc='best')
    report_plots._save(fig, path) # pylint: disable=protected-access
