"""Sweep the pairwise (DreamDPO) term: one train.py run per pair construction and tau, one table of panel change per minute."""

import dataclasses
import os

import click

from eg3d_rlhf.analysis import replication
from eg3d_rlhf.finetune import pair_sweep
from eg3d_rlhf.finetune.config import PAIR_CONSTRUCTIONS, RewardFinetuneConfig
from eg3d_rlhf.finetune.options import RunError
from eg3d_rlhf.generators.base import seed_ranges

#----------------------------------------------------------------------------

def numbers(text, kind, name):
    try:
        return [kind(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise click.UsageError(f'--{name}={text}: expected comma-separated {kind.__name__} values') from None

#----------------------------------------------------------------------------

@click.command(context_settings=dict(ignore_unknown_options=True))
@click.option('--outdir', metavar='DIR', required=True, help='Where the runs (runs/NAME) and the table (sweep.json, '
    'sweep.md, sweep.png) go; refused when not empty, unless --force')
@click.option('--constructions', metavar='LIST', default=','.join(PAIR_CONSTRUCTIONS), show_default=True,
    help='Pair constructions (--pair-construction) to run, comma-separated')
@click.option('--taus', metavar='LIST', default=','.join(f'{t:g}' for t in pair_sweep.TAUS), show_default=True,
    help='Values of --tau to run, comma-separated')
@click.option('--train-seeds', '--seeds', 'seeds', metavar='LIST', default='0', show_default=True,
    help='train.py --seed of each cell (0,1 or 100-107; two or more: every cell is compared with --baseline across them)')
@click.option('--eval-seeds', metavar='LIST', help='The panel seeds every run is scored on (train.py --panel-seeds)  '
    '[default: train.py\'s]')
@click.option('--baseline', metavar='CONSTRUCTION:TAU', help='The cell every other (construction, tau) is compared '
    'with over the seeds  [default: the first construction at the first tau]')
@click.option('--force', is_flag=True, help='Go on in a non-empty --outdir: the cells its sweep.json holds are kept, the '
    'others run and join the table')
@click.option('--dry-run', is_flag=True, help='Print the grid and each cell\'s command; run nothing')
@click.argument('train_args', nargs=-1, type=click.UNPROCESSED, metavar='[-- TRAIN.PY FLAGS...]')
def main(outdir, constructions, taus, seeds, eval_seeds, baseline, force, dry_run, train_args):
    """Run `python train.py --reward=sigma --lambda-r=10 --reward-loss=pairwise` (the embedded demo, unless the flags
    after `--` give data and a generator) once per cell of --constructions x --taus x --train-seeds, ONE AT A TIME,
    and write the panel's mean change of each run with its wall and CPU time (of the child process) and the change
    per minute of each as sweep.json, sweep.md and sweep.png. With two or more seeds, each (construction, tau) is
    compared with --baseline per seed, paired on the panel seeds, and across the seeds (Wilcoxon signed-rank,
    Holm-adjusted; eg3d_rlhf/analysis/replication.py): replication.md, replication.json and a forest plot per
    contrast. Set OMP_NUM_THREADS for the children as for train.py.

    \b
    python tools/sweep_pairwise.py --outdir=runs/pair-sweep --dry-run
    python tools/sweep_pairwise.py --outdir=runs/pair-sweep --constructions=offsets --taus=0,0.1 -- --kimg=0.2
    python tools/sweep_pairwise.py --outdir=runs/pair-claim --constructions=latents,offsets --taus=0.1 \\
        --train-seeds=100-104 --eval-seeds=5000-5199 --baseline=offsets:0.1
    """
    try:
        run_seeds = seed_ranges(seeds)
    except ValueError as err:
        raise click.UsageError(f'--train-seeds={seeds}: {err}')
    try:
        cells = pair_sweep.grid([c.strip() for c in constructions.split(',') if c.strip()],
            numbers(taus, float, 'taus'), run_seeds)
    except ValueError as err:
        raise click.UsageError(str(err))
    owned = [a for a in train_args if a.split('=')[0] in pair_sweep.CELL_FLAGS + ('--panel-seeds',) * bool(eval_seeds)]
    if owned:
        raise click.UsageError(f'{owned[0]} after --: the sweep sets {", ".join(pair_sweep.CELL_FLAGS)} itself'
            + (' and --panel-seeds from --eval-seeds' if eval_seeds else ''))
    base = pick_baseline(baseline, cells)
    panel = panel_seeds(eval_seeds, train_args)
    train_args = (*train_args, *([f'--panel-seeds={eval_seeds}'] if eval_seeds else []))
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise click.UsageError(f'--outdir={outdir} is a file; give a folder')
    if os.path.isdir(outdir) and os.listdir(outdir) and not force:
        raise click.UsageError(f'--outdir={outdir} is not empty; give another folder, or --force to add to it')
    print(f'{len(cells)} runs into {outdir}:')
    for cell in cells:
        print(f'  {cell.name}: ' + ' '.join(pair_sweep.command(cell, os.path.join(outdir, 'runs', cell.name), train_args)[1:]))
    warning = replication.dev_overlap('eg3d', run_seeds, panel)
    if warning:
        click.echo(warning, err=True)
    if len(run_seeds) > 1 and len({(c.construction, c.tau) for c in cells}) > 1:
        print(f'Across the {len(run_seeds)} training seeds: every cell against {pair_sweep.contrast_name(*base)}, '
            f'paired on panel seeds {replication.spans(panel)}')
    if dry_run:
        return
    try:
        pair_sweep.sweep(cells, outdir, train_args, baseline=base)
    except RunError as err:
        raise click.ClickException(str(err))
    with open(os.path.join(outdir, 'sweep.md'), encoding='utf-8') as f:         # The table just written.
        print(f.read() + f'Table: {os.path.join(outdir, "sweep.md")}')


def pick_baseline(text, cells):
    """(construction, tau) of --baseline CONSTRUCTION:TAU, one of the grid's; the first cell's without it."""
    if text is None:
        return cells[0].construction, cells[0].tau
    construction, _, tau = text.partition(':')
    try:
        base = construction.strip(), float(tau)
    except ValueError:
        raise click.UsageError(f'--baseline={text}: expected CONSTRUCTION:TAU, e.g. offsets:0.1') from None
    if base not in {(c.construction, c.tau) for c in cells}:
        raise click.UsageError(f'--baseline={text}: not a cell of the grid (--constructions x --taus)')
    return base


def panel_seeds(eval_seeds, train_args):
    """The panel seeds of every run: --eval-seeds, else a --panel-seeds after --, else train.py's default."""
    given = eval_seeds
    for i, arg in enumerate(train_args):
        if arg.startswith('--panel-seeds='):
            given = given or arg.split('=', 1)[1]
        elif arg == '--panel-seeds' and i + 1 < len(train_args):
            given = given or train_args[i + 1]
    text = given or next(f.default for f in dataclasses.fields(RewardFinetuneConfig) if f.name == 'panel_seeds')
    try:
        return [] if text.strip().lower() == 'none' else seed_ranges(text)
    except ValueError as err:
        raise click.UsageError(f'{"--eval-seeds" if eval_seeds else "--panel-seeds"}={text}: {err}')


#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
