"""DreamDPO's pairwise term swept: one train.py run per (pair construction, tau), its panel change per minute."""

import csv
import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np

import dnnlib
from eg3d_rlhf.analysis import replication, report_plots
from eg3d_rlhf.finetune.config import PAIR_CONSTRUCTIONS
from eg3d_rlhf.finetune.options import RunError
from eg3d_rlhf.synthetic import demo

#----------------------------------------------------------------------------
# Each cell is one child process: `python train.py --reward=sigma --lambda-r=10 --reward-loss=pairwise --tau=T
# --pair-construction=C` (the embedded demo unless `extra` gives its own data and generator) with its run folder
# under outdir/runs/NAME and its output in outdir/runs/NAME.log. The cell's panel change is its run's
# reward_report.json 'mean_delta' (RewardPanel.finish: the panel's mean reward, last tick minus first). Its time is the
# whole child's, start-up and panel scoring included: wall (time.monotonic) and CPU (user + system of the child,
# resource.getrusage(RUSAGE_CHILDREN) before and after; one run at a time, so the difference is this child's alone).
# The table (sweep.json, sweep.md, sweep.png) is rewritten after every cell, so a stopped sweep keeps what it ran, and
# a sweep into the same folder (--force) runs only the cells its table lacks. Each row also keeps its panel seeds'
# own changes (reward_trajectories.csv: last tick minus first), so that at the end, with two or more seeds, every
# (construction, tau) is compared with the baseline cell per training seed, paired on the panel seeds, and across the
# seeds (analysis/replication.py: replication.md, replication.json, a forest plot per contrast; its results in
# sweep.md and sweep.json).

TAUS = (0.0, 0.01, 0.05, 0.1, 0.3)
TRAIN_PY = os.path.join(demo.ROOT, 'train.py')
COMMAND = ('--reward=sigma', '--lambda-r=10', '--reward-loss=pairwise')
CELL_FLAGS = ('--reward', '--lambda-r', '--reward-loss', '--tau', '--pair-construction', '--seed', '--outdir')
COLUMNS = ('construction', 'tau', 'seed', 'panel_change', 'rose', 'seeds', 'wall_s', 'cpu_s', 'change_per_min',
    'change_per_cpu_min')
FACTS = ('pushed', 'diversity_ratio', 'alarm')     # run_facts(): shown when known, '-' when not.
SHOWN = COLUMNS + FACTS


@dataclasses.dataclass(frozen=True)
class Cell:
    construction: str
    tau: float
    seed: int = 0

    @property
    def name(self):
        return f'{self.construction}-tau{self.tau:g}-seed{self.seed}'


def grid(constructions=PAIR_CONSTRUCTIONS, taus=TAUS, seeds=(0,)):
    """The cells, construction-major; ValueError (one line) for an unknown construction, a bad tau or an empty axis."""
    for c in constructions:
        if c not in PAIR_CONSTRUCTIONS:
            raise ValueError(f'unknown pair construction {c!r}; use one of {", ".join(PAIR_CONSTRUCTIONS)}')
    for t in taus:
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f'tau {t}: expected a finite number >= 0')
    if not (constructions and taus and seeds):
        raise ValueError('the grid is empty: give at least one construction, tau and seed')
    return [Cell(c, float(t), int(s)) for c in dict.fromkeys(constructions) for t in dict.fromkeys(taus)
        for s in dict.fromkeys(seeds)]


def command(cell, run_parent, extra=()):
    """train.py's command line of a cell (`extra`: more train.py flags, given after the cell's own)."""
    return [sys.executable, TRAIN_PY, *COMMAND, f'--tau={cell.tau:g}', f'--pair-construction={cell.construction}',
        f'--seed={cell.seed}', f'--outdir={run_parent}', *extra]


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def newest_run(run_parent):
    """The newest run folder under run_parent (train.py numbers them); RunError when there is none."""
    runs = sorted(d for d in os.listdir(run_parent) if os.path.isdir(os.path.join(run_parent, d))) \
        if os.path.isdir(run_parent) else []
    if not runs:
        raise RunError(f'{run_parent}: no run folder; see the .log beside it')
    return os.path.join(run_parent, runs[-1])


def read_change(run_parent):
    """(mean change, seeds rose, seeds) of the newest run under run_parent; RunError (one line naming the file)."""
    path = os.path.join(newest_run(run_parent), 'reward_report.json')
    try:
        report = dnnlib.util.read_json_object(path)
    except (OSError, dnnlib.util.BadFile) as err:
        raise RunError(f'{path}: cannot be read ({err}); the run wrote no panel report, see its log.txt') from None
    values = [report.get(k) for k in ('mean_delta', 'rose', 'seeds')]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise RunError(f'{path}: mean_delta, rose and seeds must be finite numbers; not a report RewardPanel wrote')
    return float(values[0]), int(values[1]), int(values[2])


def read_panel(run_parent):
    """{'seeds': [...], 'changes': [...]}: each panel seed's reward change, last tick minus first, of the newest run
    under run_parent (its reward_trajectories.csv); RunError (one line naming the file) when it is not such a table."""
    path = os.path.join(newest_run(run_parent), 'reward_trajectories.csv')
    try:
        with dnnlib.util.open_regular(path, 'rb', error=RunError) as f:
            table = list(csv.reader(f.read(1 << 24).decode('utf-8').splitlines()))
        seeds = [int(name.removeprefix('seed')) for name in table[0][1:]]
        first, last = (np.asarray(table[i][1:], dtype=np.float64) for i in (1, -1))
    except OSError as err:
        raise RunError(f'{path}: cannot be read ({err.strerror or err}); the run wrote no panel, see its log.txt') from None
    except (UnicodeDecodeError, ValueError, IndexError, csv.Error):
        seeds = None
    if seeds is None or table[0][0] != 'kimg' or not len(seeds) == len(first) == len(last) > 0 \
            or not (np.isfinite(first).all() and np.isfinite(last).all()):
        raise RunError(f'{path}: not a panel\'s reward trajectories (kimg,seedNNNNNN,... and a finite reward per seed '
            'and tick); see the run\'s log.txt')
    return dict(seeds=seeds, changes=(last - first).tolist())


def run_facts(run_dir):
    """What else a run says, each None when its file or entry is missing or damaged (informative columns; the table
    goes on): pushed, the share of pairs whose reward gap passed tau (stats.jsonl's Reward/pairs_pushed over every
    tick); diversity_ratio, the collateral seeds' diversity after over before; alarm, whether the hacking alarm rose
    (both reward_report.json)."""
    facts = dict.fromkeys(FACTS)
    total = count = 0.0
    try:
        with open(os.path.join(run_dir, 'stats.jsonl'), encoding='utf-8') as f:
            for line in f:
                stat = json.loads(line).get('Reward/pairs_pushed')
                if isinstance(stat, dict) and math.isfinite(stat.get('mean', math.nan)) and stat.get('num', 0) > 0:
                    total, count = total + stat['mean'] * stat['num'], count + stat['num']
        facts['pushed'] = total / count if count else None
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    try:
        report = dnnlib.util.read_json_object(os.path.join(run_dir, 'reward_report.json'))
    except (OSError, dnnlib.util.BadFile):
        return facts
    facts['alarm'] = bool(report['alarm']) if 'alarm' in report else None       # Its sentence, or None when quiet.
    try:
        ratio = float(report['collateral']['diversity']['ratio'])
        facts['diversity_ratio'] = ratio if math.isfinite(ratio) else None
    except (KeyError, ValueError, TypeError):
        pass
    return facts


def run_cell(cell, outdir, extra=(), env=None):
    """Run one cell's train.py; its table row. RunError (one line) when the run fails or writes no report."""
    run_parent, log = os.path.join(outdir, 'runs', cell.name), os.path.join(outdir, 'runs', cell.name + '.log')
    os.makedirs(run_parent, exist_ok=True)
    wall, cpu = time.monotonic(), cpu_seconds()
    with open(log, 'w', encoding='utf-8') as f:
        code = subprocess.run(command(cell, run_parent, extra), stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    wall, cpu = time.monotonic() - wall, cpu_seconds() - cpu
    if code != 0:
        raise RunError(f'{cell.name}: train.py exited with {code}; see {log}')
    change, rose, seeds = read_change(run_parent)
    return dict(construction=cell.construction, tau=cell.tau, seed=cell.seed, panel_change=change, rose=rose,
        seeds=seeds, wall_s=round(wall, 1), cpu_s=round(cpu, 1), change_per_min=change / (wall / 60),
        change_per_cpu_min=change / max(cpu / 60, 1e-9), **run_facts(newest_run(run_parent)),
        run=os.path.relpath(run_parent, outdir), panel=read_panel(run_parent))

#----------------------------------------------------------------------------

def markdown(rows):
    fmt = dict(panel_change='{:+.3f}', change_per_min='{:+.4f}', change_per_cpu_min='{:+.4f}', tau='{:g}', pushed='{:.2f}',
        diversity_ratio='{:.3f}', alarm='{}')
    cell = lambda row, k: '-' if row.get(k) is None else fmt.get(k, '{}').format(row[k])
    lines = ['| ' + ' | '.join(SHOWN) + ' |', '|' + ' --- |' * len(SHOWN)]
    order = lambda r: (PAIR_CONSTRUCTIONS.index(r['construction']), r['tau'], r['seed'])
    for row in sorted(rows, key=order):                     # sweep.json keeps the order they ran in.
        lines.append('| ' + ' | '.join(cell(row, k) for k in SHOWN) + ' |')
    return '\n'.join(lines) + '\n'


def contrast_name(construction, tau):
    return f'{construction} tau {tau:g}'


def replicated(rows, baseline):
    """The replication table (analysis/replication.py, paired differences) of every other (construction, tau) against
    the baseline (construction, tau) over the training seeds both ran, each seed's panel changes paired on the panel
    seeds both scored; None with fewer than two such seeds or no other cell."""
    panels = {(r['construction'], r['tau'], r['seed']): dict(zip(r['panel']['seeds'], r['panel']['changes']))
        for r in rows if isinstance(r.get('panel'), dict)}
    base, records = tuple(baseline), []
    for construction, tau in dict.fromkeys((c, t) for c, t, _ in panels):
        if (construction, tau) == base:
            continue
        name = f'{contrast_name(construction, tau)} vs {contrast_name(*base)}'
        for seed in sorted(s for c, t, s in panels if (c, t) == (construction, tau) and (*base, s) in panels):
            mine, theirs = panels[construction, tau, seed], panels[(*base, seed)]
            common = [p for p in mine if p in theirs]
            records += replication.records(name, seed, [f'seed{p:06d}' for p in common],
                [mine[p] - theirs[p] for p in common])
    if len({r['seed'] for r in records}) < 2:
        return None
    return replication.replicate(records, kind='difference')


def write_table(outdir, rows, meta, across=False):
    """sweep.json (meta and rows), sweep.md and sweep.png in outdir, each written atomically, and (across) with two
    or more seeds the replication table against meta's baseline cell (replicated: replication.md, replication.json,
    forest plots, its results in sweep.md); the paths."""
    paths = [os.path.join(outdir, f'sweep.{ext}') for ext in ('json', 'md', 'png')]
    table = replicated(rows, meta['baseline']) if across and meta.get('baseline') else None
    text = markdown(rows)
    if table:
        paths += replication.write(table, outdir)
        text += (f'\nPanel change of each cell minus {contrast_name(*meta["baseline"])}\'s, per training seed paired on '
            'the panel seeds, and across the seeds:\n\n' + replication.markdown(table) + '\nResults:\n\n'
            + ''.join(f'- {c["result"]}\n' for c in table['contrasts']))
    with dnnlib.util.atomic_write(paths[0], 'w', encoding='utf-8') as f:
        json.dump(dnnlib.util.json_safe(dict(meta, rows=rows, replication=table)), f, indent=2, allow_nan=False)
    with dnnlib.util.atomic_write(paths[1], 'w', encoding='utf-8') as f:
        f.write(text)
    report_plots.plot_pair_sweep(rows, paths[2])
    return paths


def earlier_rows(outdir):
    """The rows of outdir's sweep.json from an earlier sweep (none when there is no such file); RunError (one line
    naming the file) when it is not a table this module wrote."""
    path = os.path.join(outdir, 'sweep.json')
    if not os.path.exists(path):
        return []
    try:
        rows = dnnlib.util.read_json_object(path, limit=1 << 24).get('rows')
    except (OSError, dnnlib.util.BadFile) as err:
        raise RunError(f'{path}: cannot be read ({err}); move it away to start the table afresh') from None
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    good = isinstance(rows, list) and all(isinstance(r, dict) and r.get('construction') in PAIR_CONSTRUCTIONS and
        all(number(r.get(k)) for k in COLUMNS[1:]) for r in rows)
    if not good:
        raise RunError(f'{path}: its rows are not a pairwise sweep\'s table; move it away to start the table afresh')
    return rows


def sweep(cells, outdir, extra=(), log=print, env=None, baseline=None):
    """Run every cell not already in outdir's sweep.json (an earlier sweep's rows are kept), one at a time, rewriting
    the table after each; all the rows. The demo's dataset is rendered first, so no cell's time includes it. baseline:
    the (construction, tau) every other one is compared with over the seeds  [default: the first cell's]."""
    if not any(a.split('=')[0] == '--data' for a in extra):
        demo.ensure_dataset(log=log)
    meta = dict(command=['python', 'train.py', *COMMAND, *extra], threads=os.environ.get('OMP_NUM_THREADS'),
        baseline=list(baseline or (cells[0].construction, cells[0].tau)))
    rows = earlier_rows(outdir)
    for row in (r for r in rows if not set(FACTS) <= set(r)):         # A table from before these columns.
        try:
            row.update(run_facts(newest_run(os.path.join(outdir, str(row.get('run'))))))
        except RunError:
            row.update((k, row.get(k)) for k in FACTS)
    for row in (r for r in rows if not isinstance(r.get('panel'), dict)):  # A table from before the panels were kept.
        try:
            row['panel'] = read_panel(os.path.join(outdir, str(row.get('run'))))
        except RunError:
            pass                                    # Left out of the comparison over seeds.
    done = {(r['construction'], r['tau'], r['seed']) for r in rows}
    for i, cell in enumerate(cells):
        if (cell.construction, cell.tau, cell.seed) in done:
            log(f'[{i + 1}/{len(cells)}] {cell.name}: in the table already, kept')
            continue
        log(f'[{i + 1}/{len(cells)}] {cell.name} ...')
        rows.append(run_cell(cell, outdir, extra, env))
        r = rows[-1]
        log(f'  panel {r["panel_change"]:+.3f} in {r["wall_s"]:.0f} s wall, {r["cpu_s"]:.0f} s CPU '
            f'({r["change_per_cpu_min"]:+.4f} per CPU minute)')
        write_table(outdir, rows, meta)
    if rows:                                        # Also when every cell was there: the newer columns filled in,
        write_table(outdir, rows, meta, across=True)    # and the comparison over seeds of every row.
    return rows

#----------------------------------------------------------------------------
