"""Sweep the pairwise (DreamDPO) term: one train.py run per pair construction and tau, one table of panel change per minute."""

import os

import click

from eg3d_rlhf.finetune import pair_sweep
from eg3d_rlhf.finetune.config import PAIR_CONSTRUCTIONS
from eg3d_rlhf.finetune.options import RunError

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
@click.option('--seeds', metavar='LIST', default='0', show_default=True,
    help='train.py --seed of each cell, comma-separated (two or more: run-to-run noise)')
@click.option('--force', is_flag=True, help='Go on in a non-empty --outdir: the cells its sweep.json holds are kept, the '
    'others run and join the table')
@click.option('--dry-run', is_flag=True, help='Print the grid and each cell\'s command; run nothing')
@click.argument('train_args', nargs=-1, type=click.UNPROCESSED, metavar='[-- TRAIN.PY FLAGS...]')
def main(outdir, constructions, taus, seeds, force, dry_run, train_args):
    """Run `python train.py --reward=sigma --lambda-r=10 --reward-loss=pairwise` (the embedded demo, unless the flags
    after `--` give data and a generator) once per cell of --constructions x --taus x --seeds, ONE AT A TIME, and write
    the panel's mean change of each run with its wall and CPU time (of the child process) and the change per minute
    of each as sweep.json, sweep.md and sweep.png. Set OMP_NUM_THREADS for the children as for train.py.

    \b
    python tools/sweep_pairwise.py --outdir=runs/pair-sweep --dry-run
    python tools/sweep_pairwise.py --outdir=runs/pair-sweep --constructions=offsets --taus=0,0.1 -- --kimg=0.2
    """
    try:
        cells = pair_sweep.grid([c.strip() for c in constructions.split(',') if c.strip()],
            numbers(taus, float, 'taus'), numbers(seeds, int, 'seeds'))
    except ValueError as err:
        raise click.UsageError(str(err))
    owned = [a for a in train_args if a.split('=')[0] in pair_sweep.CELL_FLAGS]
    if owned:
        raise click.UsageError(f'{owned[0]} after --: the sweep sets {", ".join(pair_sweep.CELL_FLAGS)} itself')
    if any(c.seed < 0 for c in cells):
        raise click.UsageError(f'--seeds={seeds}: seeds are whole numbers >= 0')
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise click.UsageError(f'--outdir={outdir} is a file; give a folder')
    if os.path.isdir(outdir) and os.listdir(outdir) and not force:
        raise click.UsageError(f'--outdir={outdir} is not empty; give another folder, or --force to add to it')
    print(f'{len(cells)} runs into {outdir}:')
    for cell in cells:
        print(f'  {cell.name}: ' + ' '.join(pair_sweep.command(cell, os.path.join(outdir, 'runs', cell.name), train_args)[1:]))
    if dry_run:
        return
    try:
        rows = pair_sweep.sweep(cells, outdir, train_args)
    except RunError as err:
        raise click.ClickException(str(err))
    print(pair_sweep.markdown(rows) + f'Table: {os.path.join(outdir, "sweep.md")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
