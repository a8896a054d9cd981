"""Import ranked pairs (the paper's rankedseedsall.csv) or k-way rankings per condition as JSONL judgements."""

import datetime

import click

from eg3d_rlhf.cli import OUT_FILE, force_option, one_line_errors, refuse_overwrite
from eg3d_rlhf.data.preferences import LabelError, import_ranked_csv, import_ranking, load_judgements, write_judgements

#----------------------------------------------------------------------------

def parse_time(ctx, param, value):
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f'{value!r} is not an ISO-8601 time, e.g. 2023-01-01T00:00:00+00:00') from None
    return value


@click.command()
@click.option('--csv', 'csv_path', type=click.Path(dir_okay=False), metavar='CSV',
    help="The ranked pairs, e.g. the paper's rankedseedsall.csv (header ',rank1,rank2')")
@click.option('--ranking', 'ranking_path', type=click.Path(dir_okay=False), metavar='CSV|JSONL',
    help='k-way rankings instead: per condition, ids best first (CSV "condition,rank1,...", x=y ties; or JSONL '
    '{"condition": C, "ranking": [id or [tied ids], ...]})')
@click.option('--out', type=OUT_FILE, required=True, metavar='JSONL', help='Judgement file to write (atomically; an existing one needs --force)')
@click.option('--annotator', default='paper', show_default=True, help='Annotator name the judgements carry')
@click.option('--time', default='2023-01-01T00:00:00+00:00', show_default=True, callback=parse_time,
    help='ISO-8601 time the judgements carry (the CSV records none)')
@force_option
@click.option('--dry-run', is_flag=True, help='Read and check the CSV, print what would be written; write nothing')
def main(csv_path, ranking_path, out, annotator, time, force, dry_run):
    """Convert ranked seed pairs into the JSONL preference format: one judgement per row, a = seedNNNNNN of rank1
    (the preferred seed), b = that of rank2, choice "a", the row's index kept as "source_index". Every row is
    checked first (file:line errors: header, column count, integer seeds in [0, 2^32 - 1], self-pairs, a pair
    ranked twice); nothing is written unless all are good. With --ranking, each ranking of k ids becomes all
    k(k-1)/2 pairs, a = the higher-ranked id with choice "a" ("tie" within one rank), keeping "condition" and
    "ranks"; train.py's --labels-w1-tau filters them by the win counts (docs/guides/circular-dpo.md).

    \b
    python tools/import_ranked.py --csv rankedseedsall.csv --out labels/paper.jsonl
    python tools/import_ranked.py --ranking rankings.csv --out labels/ranked.jsonl
    """
    if not annotator.strip():
        raise click.BadParameter('must be a non-empty name', param_hint='--annotator')
    if (csv_path is None) == (ranking_path is None):
        raise click.UsageError('give one of --csv (ranked pairs) and --ranking (k-way rankings)')
    source = csv_path or ranking_path
    refuse_overwrite(out, force=force, inputs={'--csv': csv_path, '--ranking': ranking_path})
    with one_line_errors(LabelError):
        if csv_path:
            judgements = import_ranked_csv(csv_path, annotator=annotator, time=time)
        else:
            judgements = import_ranking(ranking_path, annotator=annotator, time=time)
    if not judgements:
        raise click.ClickException(f'{source}: no ranked pairs below the header')
    seeds = f'{len({x for j in judgements for x in (j.a, j.b)})} ' + ('seeds' if csv_path else 'samples')
    if dry_run:
        print(f'would write {len(judgements)} judgements of {seeds} by {annotator} to {out}')
        return
    with one_line_errors(LabelError):
        write_judgements(out, judgements)
        written = load_judgements(out)                                  # Read back as training will read it.
    print(f'wrote {len(written)} judgements of {seeds} by {annotator} to {out}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
