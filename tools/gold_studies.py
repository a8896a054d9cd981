"""People as the gold: the blind studies of a run's kept snapshots against its start, what is left to do, the curve."""

import click

from eg3d_rlhf.finetune import gold_studies


@click.command()
@click.argument('run_dir', type=click.Path(exists=True, file_okay=False))
@click.option('--seeds', default='7000-7031', show_default=True, metavar='LIST',
    help='Seeds of every study\'s banks (the same for the start and each snapshot); not the panel\'s')
@click.option('--res', type=click.IntRange(16, 512), default=64, show_default=True, help='Cube resolution of the banks')
def main(run_dir, seeds, res):
    """Read RUN_DIR's gold_studies.json (train eg3d --gold-study-every N), print for each kept snapshot its study's
    state and, until it is scored, the commands that make and score it; write gold_studies_report.json and .png
    (people's win rate of each scored snapshot over the start, against the distance from the start, beside the proxy).

    \b
    python tools/gold_studies.py training-runs/00000-...-reward-demo --seeds 7000-7031
    """
    try:
        rows = gold_studies.collect(run_dir)
    except gold_studies.PlanError as err:
        raise click.ClickException(str(err))
    for row in rows:
        head = f'tick {row["tick"]} ({row["kimg"]:g} kimg, distance {row["distance"]:.3g}, proxy {row["proxy_gain"]:+.2f} sd)'
        if row['state'] == 'start':
            print(f'{head}: the start')
        elif row['state'] == 'scored':
            lo, hi = row['wilson95']
            print(f'{head}: tuned preferred in {100 * row["win_rate"]:.1f}% of {row["decided"]} decided pairs '
                f'(Wilson 95% {100 * lo:.1f}-{100 * hi:.1f}%)')
        else:
            print(f'{head}: {row["state"]}; next:')
            for command in gold_studies.commands(run_dir, row, seeds, res)[2 if row['state'] == 'labelled' else 0:]:
                print(f'  {command}')
    if sum(r['state'] == 'scored' for r in rows):
        print(f'report: {gold_studies.write_report(run_dir, rows)}')


if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
