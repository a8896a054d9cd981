"""README's headline table from docs/results/headlines.json: add a claim's row from its replication.json, render."""

import os

import click

import dnnlib
from eg3d_rlhf.analysis import headlines

#----------------------------------------------------------------------------

@click.command()
@click.option('--add', 'claim', metavar='TEXT', help='The claim of a row to add (or replace): a short sentence')
@click.option('--replication', metavar='JSON', help='With --add: the replication.json (tools/replicate.py, '
    'tools/sweep_circular.py --train-seeds) whose across-seed result the row shows')
@click.option('--contrast', metavar='NAME', help='With --add: the contrast of a replication.json that has several')
@click.option('--entry', metavar='MD', help='With --add: the dated results entry (docs/results/...) the claim links to')
@click.option('--rows', default=os.path.join('docs', 'results', 'headlines.json'), show_default=True, metavar='JSON',
    help='The machine-written file of rows')
@click.option('--readme', default='README.md', show_default=True, metavar='MD', help='The page whose table it renders')
@click.option('--check', is_flag=True, help='Write nothing; exit 1 when the page\'s table is not the rows\' table')
def main(claim, replication, contrast, entry, rows, readme, check):
    """Keep README.md's headline table, between its two headline markers, rendered from headlines.json, so every
    headline number has one source: the across-seed result of a replication.json beside its dated results entry.

    \b
    eg3d-rlhf headline --add "Main job: tuned preferred by oracle:nose" \\
        --replication docs/results/2026-11-26-main-job-8-seeds.json --entry docs/results/2026-11-26-main-job-8-seeds.md
    eg3d-rlhf headline              # render README.md's table
    eg3d-rlhf headline --check
    """
    try:
        if claim is not None:
            if check or not replication or not entry:
                raise click.UsageError('--add needs --replication and --entry (and no --check)')
            if not os.path.isfile(entry):
                raise click.UsageError(f'--entry: {entry} does not exist; write the results entry first')
            rel = os.path.relpath(entry, os.path.dirname(os.path.abspath(readme)) or '.')
            found = headlines.add(rows, claim, rel, headlines.row_of(replication, contrast))
            print(f'{rows}: {len(found)} rows')
        elif replication or entry or contrast:
            raise click.UsageError('--replication, --entry and --contrast go with --add')
        with open(readme, encoding='utf-8') as f:
            text = f.read()
        new = headlines.spliced(text, headlines.load(rows), readme)
    except headlines.HeadlineError as err:
        raise click.ClickException(str(err))
    except OSError as err:
        raise click.ClickException(f'{readme}: cannot read it ({err.strerror or err})')
    if check:
        if new != text:
            raise click.ClickException(f'{readme}: its headline table is not {rows}\'s; run: eg3d-rlhf headline')
        print(f'{readme}: the headline table is current')
        return
    if new != text:
        with dnnlib.util.atomic_write(readme, 'w', encoding='utf-8') as f:
            f.write(new)
    print(f'{readme}: headline table {"written" if new != text else "already current"}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
