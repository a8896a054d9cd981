"""Play a blind study through its page as a simulated person: each pair judged from the pictures the page serves."""

import collections

import click
from tqdm import tqdm

from eg3d_rlhf.cli import FINITE, FiniteRange
from eg3d_rlhf.data import study_player
from eg3d_rlhf.data.bank import BankError
from eg3d_rlhf.data.person_like import JND_PIXELS, WORLD_TASTES, parse_person

#----------------------------------------------------------------------------

def check_person(ctx, param, value):
    try:
        return parse_person(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@click.command()
@click.option('--url', required=True, metavar='URL', help='The study page, e.g. http://127.0.0.1:8765/ (tools/label.py study)')
@click.option('--annotator', 'taste', required=True, callback=check_person, metavar='person:TASTE',
    help=f'The simulated person: person:{", person:".join(WORLD_TASTES)}')
@click.option('--bank', 'banks', multiple=True, required=True, metavar='DIR',
    help='A bank whose pictures the person has seen (the study\'s two banks; repeatable): how a served picture leads to its geometry')
@click.option('--jnd-pixels', type=FINITE, default=JND_PIXELS, show_default=True,
    help='The just-noticeable difference in pixels of the first bank\'s previews (below it: a coin flip)')
@click.option('--jnd', type=FINITE, metavar='WORLD', help='The JND in world units instead  [default: from --jnd-pixels]')
@click.option('--lapse', type=FiniteRange(0, 1), default=0.02, show_default=True, help='Share of answers given at random')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Seed of the coin flips and noise')
@click.option('--token', metavar='TOKEN', help='An invite\'s secret, for a page beyond loopback')
@click.option('--limit', type=click.IntRange(min=1), metavar='N', help='Stop after N pairs  [default: every pair]')
def main(url, taste, banks, jnd_pixels, jnd, lapse, seed, token, limit):
    """Judge every pair a running study page shows (tools/label.py study) as a person-like simulated annotator
    (eg3d_rlhf/data/person_like.py): the taste's difference in world units, a coin flip below the just-noticeable
    difference, noisy above it, with lapses. It asks the page what a browser asks and never reads the study's key; it
    knows each served picture from the banks given (the sample's slab scores the taste). Score with score-study.

    \b
    python tools/label.py study --original out/bank-original --tuned out/bank-tuned --out study.jsonl --annotator sim --port 8765 &
    python tools/play_study.py --url http://127.0.0.1:8765/ --annotator person:nose --bank out/bank-original --bank out/bank-tuned
    python tools/label.py score-study --out study.jsonl
    """
    if (jnd is not None and jnd <= 0) or jnd_pixels <= 0:
        raise click.UsageError('the JND must be positive')
    try:
        page = study_player.Page(url, token)
        annotator, seen = study_player.person(taste, banks, jnd=jnd, jnd_pixels=jnd_pixels, lapse=lapse, seed=seed)
    except (ValueError, BankError, OSError) as err:
        raise click.UsageError(str(err).splitlines()[0]) from None
    print(f'{annotator.name}: JND {annotator.jnd:.4g} world units' + (f' ({jnd_pixels:g} preview pixels)' if jnd is None
        else '') + f', noise spread {annotator.spread:.4g}, lapses {lapse:g}')
    try:
        with tqdm(desc='pairs', unit='pair') as bar:
            sent = study_player.play(page, seen, annotator, limit=limit, progress=bar.update)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as err:      # A bank's bad file, or not our page.
        raise click.ClickException(f'{url}: {err!r}'.splitlines()[0]) from None
    counts = collections.Counter('attention' if s['visible'] is None else 'visible' if s['visible'] else 'below the JND'
        for s in sent)
    print(f'judged {len(sent)} pairs: ' + ', '.join(f'{n} {k}' for k, n in sorted(counts.items())))


#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
