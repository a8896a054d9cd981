"""Snapshots kept along a reward run for blind same-seed studies against its start: people's answers as gold points."""

import copy
import json
import math
import os

import numpy as np

import dnnlib
from eg3d_rlhf.analysis import report_plots

#----------------------------------------------------------------------------
# Without a simulated taste the gold comes from people. Every N recorded ticks (the start first) the run keeps G_ema as
# gold-studies/tick-NNNN.pkl and lists it, with its kimg, its distance from the start and the proxy's gain, in
# gold_studies.json. Each kept tick then gets a bank of the same seeds as the start's bank and a blind study of the
# two (tools/label.py study); tools/gold_studies.py prints the commands still to run and, from the studies scored so
# far, puts the tuned generator's win rate against the start at each snapshot's distance. The start is 50% by
# construction.

PLAN = 'gold_studies.json'
FOLDER = 'gold-studies'
REPORT = 'gold_studies_report'


def save_generator(path, G_ema):
    """A network pickle holding a CPU copy of G_ema alone (what sample_bank and evaluate read), atomically."""
    from training import legacy # pylint: disable=import-outside-toplevel  (the training package: EG3D's pickles)
    legacy.save_network_pkl(path, dict(G_ema=copy.deepcopy(G_ema).eval().requires_grad_(False).cpu()))


class GoldStudies:
    """Keeps G_ema every `every` recorded ticks of a run (RewardPanel.record calls keep) and lists what it kept."""

    def __init__(self, run_dir, every):
        if int(every) < 1:
            raise ValueError(f'gold studies every {every!r} ticks; expected 1 or more')
        self.run_dir, self.every, self.entries = run_dir, int(every), []

    def keep(self, G_ema, tick, kimg, distance, proxy_gain):
        """Write tick `tick`'s G_ema and rewrite the plan when the tick is one to keep; returns the pickle's path or None."""
        if tick % self.every:
            return None
        name = os.path.join(FOLDER, f'tick-{tick:04d}.pkl')
        path = os.path.join(self.run_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_generator(path, G_ema)
        entry = dict(tick=int(tick), kimg=float(kimg), distance=float(distance), proxy_gain=float(proxy_gain), pkl=name)
        self.entries = [e for e in self.entries if e['tick'] != tick] + [entry]
        with dnnlib.util.atomic_write(os.path.join(self.run_dir, PLAN), 'w', encoding='utf-8') as f:
            json.dump(dict(every=self.every, snapshots=self.entries), f, indent=1)
        return path

#----------------------------------------------------------------------------
# Reading a plan back (an untrusted file: every field checked) and the studies made of it.

class PlanError(ValueError):
    """A gold-studies plan or study score that cannot be used; the message names the file."""


def read_plan(run_dir):
    """The snapshots of run_dir's gold_studies.json, the start first: [dict(tick, kimg, distance, proxy_gain, pkl)]."""
    path = os.path.join(run_dir, PLAN)
    try:
        with open(path, encoding='utf-8') as f:
            plan = json.load(f)
        entries = plan['snapshots']
        out = [dict(tick=int(e['tick']), kimg=float(e['kimg']), distance=float(e['distance']),
            proxy_gain=float(e['proxy_gain']), pkl=str(e['pkl'])) for e in entries]
    except FileNotFoundError:
        raise PlanError(f'{path} does not exist: train with --gold-study-every N to keep snapshots for studies') from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PlanError(f'{path} is not a gold-studies plan ({type(err).__name__}: {err}); rerun the training') from None
    for e in out:
        if not all(math.isfinite(e[k]) for k in ('kimg', 'distance', 'proxy_gain')) or e['tick'] < 0:
            raise PlanError(f'{path}: tick {e["tick"]} has a non-finite or negative number; rerun the training')
        if os.path.normpath(e['pkl']) != os.path.join(FOLDER, f'tick-{e["tick"]:04d}.pkl'):
            raise PlanError(f'{path}: tick {e["tick"]} names {e["pkl"]!r}, not its own snapshot; rerun the training')
    out.sort(key=lambda e: e['tick'])
    if not out or out[0]['tick'] != 0:
        raise PlanError(f'{path} has no start snapshot (tick 0); rerun the training')
    return out


def snapshot_path(run_dir, entry):
    return os.path.join(run_dir, FOLDER, f'tick-{entry["tick"]:04d}.pkl')


def study_path(run_dir, entry):
    return os.path.join(run_dir, FOLDER, f'tick-{entry["tick"]:04d}', 'study.jsonl')


def commands(run_dir, entry, seeds, res):
    """The shell commands that make and score the blind study of one snapshot against the start (seeds: a LIST)."""
    bank = lambda e: os.path.join(run_dir, FOLDER, f'tick-{e["tick"]:04d}', 'bank')
    sample = lambda e: (f'python tools/sample_bank.py --network {snapshot_path(run_dir, e)} --trust-pickle '
        f'--seeds {seeds} --res {res} --outdir {bank(e)}')
    study = study_path(run_dir, entry)
    return [sample(dict(tick=0)), sample(entry), f'python tools/label.py study --original {bank(dict(tick=0))} '
        f'--tuned {bank(entry)} --out {study} --annotator YOU', f'python tools/label.py score-study --out {study}']


def read_score(path):
    """(win rate of the tuned generator, its Wilson 95% interval, decided pairs) from a study's score.json (pooled,
    without flagged annotators where some were flagged); None when no pair was decided."""
    try:
        with open(path, encoding='utf-8') as f:
            result = json.load(f)
        pooled = result['pooled_without_flagged'] or result['pooled']
        decided = int(pooled['wins']) + int(pooled['losses'])
        rate, (lo, hi) = float(pooled['win_rate']), (float(x) for x in pooled['wilson95'])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PlanError(f'{path} is not a study score ({type(err).__name__}: {err}); run tools/label.py score-study '
            'again') from None
    if not decided:
        return None
    if not all(math.isfinite(x) and 0 <= x <= 1 for x in (rate, lo, hi)):
        raise PlanError(f'{path}: its win rate is not a share in [0, 1]; run tools/label.py score-study again')
    return rate, (lo, hi), decided


def collect(run_dir):
    """Each snapshot of the plan with its study's state: 'scored' (win_rate, wilson95, decided), 'labelled' (a study
    file, no score yet), or 'to do'. The start is 0.5 by construction."""
    out = []
    for e in read_plan(run_dir):
        study = study_path(run_dir, e)
        row = dict(e, state='to do', win_rate=None, wilson95=None, decided=0)
        if e['tick'] == 0:
            row.update(state='start', win_rate=0.5)
        elif os.path.exists(study + '.score.json'):
            score = read_score(study + '.score.json')
            row['state'] = 'labelled' if score is None else 'scored'
            if score is not None:
                row.update(win_rate=score[0], wilson95=list(score[1]), decided=score[2])
        elif os.path.exists(study):
            row['state'] = 'labelled'
        out.append(row)
    return out


def plot(rows, path):
    """People's win rate of each scored snapshot against the start (Wilson 95% bars) and the proxy's gain, against
    the distance from the start."""
    plt = report_plots._pyplot() # pylint: disable=protected-access
    fig, ax = plt.subplots(figsize=(7, 4.5))
    scored = [r for r in rows if r['win_rate'] is not None]
    d = np.array([r['distance'] for r in scored])
    rate = np.array([r['win_rate'] for r in scored])
    lo = np.array([r['win_rate'] - (r['wilson95'] or [r['win_rate']] * 2)[0] for r in scored])
    hi = np.array([(r['wilson95'] or [r['win_rate']] * 2)[1] - r['win_rate'] for r in scored])
    ax.errorbar(d, 100 * rate, yerr=100 * np.stack([lo, hi]), fmt='s-', color='tab:orange', capsize=3,
        label='people: tuned preferred over the start (blind, same seeds)')
    ax.axhline(50, color='grey', linewidth=0.8)
    ax.set(xlabel='distance from the start (slab RMS of raw sigma, same seeds)', ylabel='tuned preferred (%)',
        ylim=(0, 100), title='Gold from people along the run')
    twin = ax.twinx()
    twin.plot([r['distance'] for r in rows], [r['proxy_gain'] for r in rows], 'o:', color='tab:blue', label='proxy')
    twin.set_ylabel('proxy gain since the start (sd of the start)')
    ax.legend(loc='upper left', fontsize=8)
    twin.legend(loc='lower right', fontsize=8)
    report_plots._save(fig, path) # pylint: disable=protected-access


def write_report(run_dir, rows):
    """gold_studies_report.json and .png in run_dir (atomically); returns the JSON's path."""
    plot(rows, os.path.join(run_dir, REPORT + '.png'))
    path = os.path.join(run_dir, REPORT + '.json')
    with dnnlib.util.atomic_write(path, 'w', encoding='utf-8') as f:
        json.dump(dict(snapshots=rows), f, indent=1)
    return path
