"""Rate every sample a running ratings page shows as a simulated rater of the paper's five criteria (paper5)."""

import collections

import click
from tqdm import tqdm

from eg3d_rlhf.analysis import sim_raters
from eg3d_rlhf.cli import FINITE, family_options
from eg3d_rlhf.data.bank import BankError
from eg3d_rlhf.synthetic.family import Family

#----------------------------------------------------------------------------


@click.command()
@click.option('--url', required=True, metavar='URL', help='The ratings page, e.g. http://127.0.0.1:8765/ (tools/label.py rate --criteria paper5)')
@click.option('--bank', 'banks', multiple=True, required=True, metavar='DIR',
    help='A bank whose samples the rater has seen (every bank rated; repeatable): how a served picture leads to its geometry')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='The rater: seed of its leniency and noise')
@click.option('--noise', type=FINITE, default=0.5, show_default=True, help='Noise on each rating, in points (sd)')
@click.option('--leniency', type=FINITE, default=0.3, show_default=True, help='Spread of a rater\'s bias, in points (sd)')
@family_options
@click.option('--token', metavar='TOKEN', help='An invite\'s secret, for a page beyond loopback')
@click.option('--limit', type=click.IntRange(min=1), metavar='N', help='Stop after N samples  [default: every one]')
def main(url, banks, seed, noise, leniency, family_seed, build_spread, family_heads, token, limit):
    """Rate every sample a running ratings page shows (tools/label.py rate --criteria paper5) 1-5 on condition
    consistency, plausibility, geometric detail, surface quality and overall, each from the sample's geometry held
    against the generator's training family (eg3d_rlhf/analysis/sim_raters.py), with the rater's leniency and noise.
    It asks the page what a browser asks and never reads the key: it knows each served sample by its three previews,
    from the banks given, and keeps no bank name. On loopback one server is one annotator: serve, rate, stop, repeat.

    \b
    python tools/label.py rate --bank out/bank-original --bank out/bank-tuned --criteria paper5 --out ratings.jsonl --annotator sim-1 --port 8765 &
    python tools/play_ratings.py --url http://127.0.0.1:8765/ --bank out/bank-original --bank out/bank-tuned --seed 1
    kill -INT %1
    python tools/label.py score-ratings --out ratings.jsonl --tuned out/bank-tuned
    """
    if noise < 0 or leniency < 0:
        raise click.UsageError('--noise and --leniency must be >= 0')
    family = Family(seed=family_seed, build_spread=build_spread, heads=family_heads)
    try:
        page = sim_raters.Page(url, token)
        with tqdm(desc='samples seen', unit='sample') as bar:
            seen = sim_raters.SeenSamples(banks, family, progress=bar.update)
    except (ValueError, BankError, OSError) as err:
        raise click.UsageError(str(err).splitlines()[0]) from None
    rater = sim_raters.Rater(seed, noise, leniency)
    print(f'rater {seed}: leniency {rater.bias:+.2f} points, noise {noise:g}; {len(seen.measures)} samples seen; '
        f'family {family.describe()}')
    try:
        with tqdm(desc='rated', unit='sample') as bar:
            sent = sim_raters.play(page, seen, rater, limit=limit, progress=bar.update)
    except (OSError, RuntimeError, ValueError) as err:
        raise click.ClickException(f'{url}: {str(err).splitlines()[0]}') from None
    counts = collections.Counter('skipped (pictures never seen)' if s['ratings'] is None else 'rated' for s in sent)
    print(f'{len(sent)} samples: ' + ', '.join(f'{n} {k}' for k, n in sorted(counts.items())))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
