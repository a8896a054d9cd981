"""Kill -9 a reward run at random moments, resume it from its last snapshot, and compare with uninterrupted runs."""

import csv
import glob
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time

import click
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The bundled demo, shortened: snapshots every tick so a kill loses at most one tick, a 50-seed panel.
DEMO_ARGS = ['--reward=sigma', '--lambda-r=10', '--kimg=0.2', '--tick=0.05', '--snap=1', '--panel-seeds=2000-2049']

#----------------------------------------------------------------------------

def start(args, outdir, log):
    """train.py with `args` into outdir (its own process group, output to `log`)."""
    os.makedirs(outdir, exist_ok=True)
    with open(log, 'w') as f:
        return subprocess.Popen([sys.executable, os.path.join(REPO, 'train.py'), f'--outdir={outdir}', *args], cwd=REPO,
            stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc, log):
    if proc.wait() != 0:
        raise click.ClickException(f'train.py failed (exit {proc.returncode}); see {log}')


def run_dir_of(outdir):
    runs = sorted(d for d in glob.glob(os.path.join(outdir, '0*')) if os.path.isdir(d))
    return runs[-1] if runs else None


def results(run_dir):
    """The run's reward report and its panel trajectories (a row per tick: kimg, then each seed's reward)."""
    with open(os.path.join(run_dir, 'reward_report.json')) as f:
        report = json.load(f)
    with open(os.path.join(run_dir, 'reward_trajectories.csv')) as f:
        rows = list(csv.reader(f))
    return report, np.array(rows[1:], dtype=float)


def uninterrupted(args, outdir, seed):
    log = os.path.join(outdir, 'log.txt')
    t0 = time.time()
    finish(start([*args, f'--seed={seed}'], outdir, log), log)
    report, trajectory = results(run_dir_of(outdir))
    return dict(seed=seed, seconds=time.time() - t0, **{k: report[k] for k in ('mean_delta', 'rose', 'seeds', 'fit_slope')}), trajectory


def snapshots(folder):
    """The network snapshots under a run's --outdir, oldest first."""
    return sorted(glob.glob(os.path.join(folder, '*', 'network-snapshot-*.pkl')), key=os.path.getmtime)


def killed_and_resumed(args, outdir, delay, after_snapshot=False):
    """Start, kill -9 after `delay` s (with after_snapshot: and not before the run's first snapshot exists, so a
    machine slower than during the baselines still tests a resume), resume from the newest snapshot (or start again
    without one), run to the end."""
    first, second = os.path.join(outdir, 'killed'), os.path.join(outdir, 'resumed')
    proc = start([*args, '--seed=0'], first, os.path.join(outdir, 'killed.log'))
    try:
        proc.wait(timeout=delay)
        raise click.ClickException(f'the run ended before the kill at {delay:.0f} s: shorten the kill moments')
    except subprocess.TimeoutExpired:
        while after_snapshot and not snapshots(first) and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is not None:
            raise click.ClickException(f'the run ended before the kill at {delay:.0f} s: shorten the kill moments')
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_dir = run_dir_of(first)
    snaps = sorted(glob.glob(os.path.join(killed_dir or first, 'network-snapshot-*.pkl')), key=os.path.getmtime)
    temporaries = len(glob.glob(os.path.join(killed_dir or first, '.tmp-*')))
    resume = [f'--resume={snaps[-1]}', '--trust-pickle'] if snaps else []
    log = os.path.join(outdir, 'resumed.log')
    finish(start([*args, '--seed=0', *resume], second, log), log)
    run_dir = run_dir_of(second)
    report, trajectory = results(run_dir)
    with open(os.path.join(run_dir, 'training_options.json')) as f:
        resumed_from = json.load(f).get('resume_kimg') if snaps else None
    return dict(killed_after_s=round(delay, 1), resumed_from_kimg=resumed_from, temporaries_left_by_kill=temporaries,
        temporaries_after_resume=len(glob.glob(os.path.join(killed_dir or first, '.tmp-*'))),
        first_kimg=report['first_kimg'], last_kimg=report['last_kimg'],
        **{k: report[k] for k in ('mean_delta', 'rose', 'seeds', 'fit_slope')}), trajectory

#----------------------------------------------------------------------------

@click.command(context_settings=dict(ignore_unknown_options=True))
@click.option('--outdir', required=True, metavar='DIR', help='Where the runs and kill_resume.json go (must not exist)')
@click.option('--trials', type=click.IntRange(min=1), default=5, show_default=True, help='Kill-and-resume trials')
@click.option('--baselines', type=click.IntRange(min=2), default=3, show_default=True, help='Uninterrupted runs (seeds 0..N-1): the noise')
@click.option('--kill-seed', type=int, default=0, show_default=True, help='Seed of the kill moments')
@click.option('--after-snapshot', is_flag=True, help='Kill no run before its first snapshot exists (a loaded machine '
    'runs slower than during the baselines)')
@click.argument('train_args', nargs=-1, type=click.UNPROCESSED)
def main(outdir, trials, baselines, kill_seed, after_snapshot, train_args):
    """Baseline: uninterrupted runs of train.py TRAIN_ARGS (default: the demo, shortened) with seeds 0..N-1; their
    spread is the noise. Measured: runs of seed 0 killed with SIGKILL at a moment drawn uniformly between 10% and 95%
    of the baseline's wall time, then resumed with --resume from their newest snapshot. Each resumed report must
    start at kimg 0 from the original generator's rewards and end within noise of the uninterrupted seed-0 run; on
    one CPU process, where snapshots carry the exact resume state, every tick should equal the seed-0 run's."""
    args = list(train_args) or DEMO_ARGS
    if os.path.exists(outdir):
        raise click.ClickException(f'{outdir} exists; pass a new --outdir')
    base, straight = [], None
    for seed in range(baselines):                   # Run alone: the kill moments are fractions of their wall time.
        row, trajectory = uninterrupted(args, os.path.join(outdir, f'baseline{seed}'), seed)
        base.append(row)
        straight = trajectory if straight is None else straight
        print(f'baseline seed {seed}: mean change {row["mean_delta"]:+.4f}, {row["rose"]}/{row["seeds"]} rose, '
            f'slope {row["fit_slope"]:.3f}, {row["seconds"]:.0f} s', flush=True)
    noise = statistics.stdev(r['mean_delta'] for r in base)
    rnd = random.Random(kill_seed)
    out = []
    for t in range(trials):
        delay = rnd.uniform(0.10, 0.95) * min(r['seconds'] for r in base)
        row, trajectory = killed_and_resumed(args, os.path.join(outdir, f'trial{t}'), delay, after_snapshot)
        row['same_start'] = bool(np.allclose(trajectory[0], straight[0], rtol=1e-5, atol=1e-6))
        row['same_trajectory'] = trajectory.shape == straight.shape and bool(np.array_equal(trajectory, straight))
        row['difference'] = row['mean_delta'] - base[0]['mean_delta']
        row['within_noise'] = abs(row['difference']) <= 3 * noise
        out.append(row)
        print(f'trial {t}: killed after {row["killed_after_s"]} s, resumed from {row["resumed_from_kimg"]} kimg '
            f'(temporaries {row["temporaries_left_by_kill"]} -> {row["temporaries_after_resume"]}); report from kimg '
            f'{row["first_kimg"]:g} (same start: {row["same_start"]}): mean change {row["mean_delta"]:+.4f}, '
            f'{row["difference"] / noise:+.2f} x noise vs seed 0; every tick identical: {row["same_trajectory"]}', flush=True)
    summary = dict(train_args=args, noise_std=noise, baselines=base, trials=out,
        all_hold=all(r['same_start'] and r['first_kimg'] == 0 and r['within_noise'] for r in out))
    with open(os.path.join(outdir, 'kill_resume.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print(f'noise (std of the baselines\' mean change): {noise:.4f}; every trial holds: {summary["all_hold"]}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
