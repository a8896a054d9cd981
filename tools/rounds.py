"""Online rounds on a generator: draw from it, label the pairs its reward is least sure of, refit, tune again."""

import os

import click

from eg3d_rlhf.cli import FiniteRange, network_family, network_path, parse_range
from eg3d_rlhf.data import annotators, people_round
from eg3d_rlhf.data.label_pages import check_allowed_host, check_host
from eg3d_rlhf.data.label_server import is_loopback
from eg3d_rlhf.data.labeling import ANNOTATOR
from eg3d_rlhf.data.preferences import LabelError
from eg3d_rlhf.finetune import label_efficiency, rounds
from eg3d_rlhf.finetune.options import RunError
from eg3d_rlhf.finetune.overopt_sweep import keep_settings
from eg3d_rlhf.generators.base import seed_ranges


def held_pickles(outdir):
    """The network pickles (.pkl) under outdir, in walk order: a resumed run loads its rounds' generators."""
    found = []
    for root, dirs, files in os.walk(outdir):
        dirs.sort()
        found += [os.path.join(root, name) for name in files if name.endswith('.pkl')]
    return found


@click.command(context_settings=dict(ignore_unknown_options=True))
@click.option('--outdir', required=True, metavar='DIR',
    help='Where round-0/, round-1/, ... and rounds.json go; what is there already is reused, so a stopped run resumes')
@click.option('--network', default='bundled', show_default=True, metavar='PKL|PT|bundled|bundled-flow', help='The generator to start from: EG3D or flow')
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust --network and the network pickles a resumed run finds in --outdir: loading a pickle can run code stored in it')
@click.option('--rounds', 'count', type=click.IntRange(min=1), default=3, show_default=True, help='Rounds to run')
@click.option('--judgements', type=click.IntRange(min=1), default=150, show_default=True, help='Judgements per round')
@click.option('--random-share', type=FiniteRange(0, 1), default=0.25, show_default=True,
    help='Share of each later round\'s pairs drawn at random (calibration); the rest go where the reward\'s members disagree most')
@click.option('--bank-size', type=click.IntRange(min=2), default=100, show_default=True,
    help='Seeds each round draws from its generator (a flow\'s: each under every condition)')
@click.option('--bank-seed', type=click.IntRange(min=0), default=20000, show_default=True,
    help='First seed of round 0\'s bank; each round draws the next --bank-size seeds')
@click.option('--res', type=click.IntRange(min=16), default=64, show_default=True, help='Cube resolution of the banks and the gold')
@click.option('--annotator', default='oracle:nose', show_default=True, metavar='oracle:NAME|people|people:NAME',
    help='A simulated annotator, or people through the labeling page: invited annotators (people, with --host) or one person on loopback (people:NAME)')
@click.option('--gold-taste', metavar='oracle:NAME', help='The taste the gold step scores  [default: a simulated annotator\'s own; people: none]')
@click.option('--host', callback=check_host, metavar='ADDR', help='People: the address the page listens on  [default: 127.0.0.1]; beyond loopback only invited annotators get in')
@click.option('--port', type=click.IntRange(0, 65535), default=8765, show_default=True, help='People: the page\'s port (0 = any free one)')
@click.option('--allow-host', 'allow_hosts', multiple=True, callback=check_allowed_host, metavar='NAME', help='People: another name the page may be opened by (label.py serve --allow-host)')
@click.option('--invite', 'invited', multiple=True, metavar='NAME', help='People: invite NAME and print their link (repeatable; label.py invite NAME --out OUTDIR/people does the same)')
@click.option('--check', type=click.IntRange(min=0), default=0, show_default=True, help='Same-seed pairs each round asks about after tuning: its tuned generator against the one it started from (counted in --judgements; 0 = none)')
@click.option('--keep-better', is_flag=True, help='With --check: a round whose tuned generator does not win more of its check pairs than it loses hands on the generator it started from')
@click.option('--window', type=click.IntRange(min=0), default=0, show_default=True, help='Refit each round\'s reward on the judgements of its last N rounds only, leaving older rounds out (0 = every round\'s)')
@click.option('--temperature', type=FiniteRange(min=0), default=0.5, show_default=True, help='Its noise, in sd of its taste')
@click.option('--refit-all/--no-refit-all', default=True, show_default=True, help='Refit each round\'s reward on every judgement so far, the pairs across train_reward\'s splits too (train_reward --refit-all)')
@click.option('--kimg', type=FiniteRange(min=0, min_open=True), default=0.4, show_default=True, help='EG3D: fine-tuning per round')
@click.option('--lambda-r', type=FiniteRange(min=0), default=10.0, show_default=True, help='EG3D: weight of the reward')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Seed of the pair draws, the noise and train.py')
@click.option('--eval-seeds', default='9000-9063', show_default=True, metavar='LIST',
    help='Held-out seeds where each round\'s generator meets the start under the annotator\'s noise-free taste')
@click.option('--nproc', type=click.IntRange(min=1), default=1, show_default=True, help='Processes (torchrun) of each round\'s bank, refit and a flow\'s fine-tuning; EG3D\'s fine-tuning runs as one')
@click.option('--train-seeds', type=parse_range, metavar='LIST', help='Compare label efficiency: run the rounds once per training seed (its --seed) beside one upfront round per --upfront total, in OUTDIR/seed-S/; a later call may add seeds')
@click.option('--upfront', type=parse_range, metavar='LIST', help='With --train-seeds: judgement totals of the upfront runs, each one round on the start\'s bank of --rounds x --bank-size seeds, tuned --rounds times as long  [default: --rounds x --judgements]')
@click.argument('train_args', nargs=-1, type=click.UNPROCESSED, metavar='[-- TRAIN.PY FLAGS...]')
def main(outdir, network, trust_pickle, count, judgements, random_share, bank_size, bank_seed, res, annotator, gold_taste,
        host, port, allow_hosts, invited, check, keep_better, window, temperature, refit_all, kimg, lambda_r, seed, eval_seeds, nproc, train_seeds, upfront, train_args):
    """Round k draws --bank-size seeds from its generator, asks the annotator about --judgements pairs (the pairs
    the previous round's reward ensemble is least sure of, and a --random-share at random), refits the default sigma
    reward on every judgement so far, fine-tunes the generator from where it is with it (EG3D: train.py's reward
    phase, --kimg; a flow: Circular-DPO on every judgement so far, the reward ranking step 2), and measures the result
    against the start on --eval-seeds. A flow's pairs join samples of one condition. Each round is a folder of the run
    (round-K/); every step is kept, so a stopped run resumes. Flags after -- go to every train.py run. With people,
    each round serves the labeling page and waits until its judgements have come, from any number of invited
    annotators.

    \b
    python tools/rounds.py --outdir out/rounds --rounds 3 --judgements 150 --annotator oracle:nose
    python tools/rounds.py --outdir out/rounds-flow --network bundled-flow --annotator oracle:proportions
    python tools/rounds.py --outdir out/rounds-checked --rounds 4 --judgements 150 --check 32 --keep-better
    python tools/rounds.py --outdir out/efficiency --rounds 4 --judgements 150 --train-seeds 1-3 --upfront 600,1200
    python tools/rounds.py --outdir out/rounds-people --annotator people --host 0.0.0.0 --invite alice --invite bob
    """
    people, person = rounds.people_name(annotator)
    try:
        if not people:
            annotators.parse_annotator(annotator)
        if gold_taste:
            annotators.parse_annotator(gold_taste)
        held_out = set(seed_ranges(eval_seeds))
    except ValueError as err:
        raise click.BadParameter(str(err))
    if people and person is None and is_loopback(host):
        raise click.BadParameter('people on loopback is one person: people:NAME, or --host ADDR for invited annotators',
            param_hint='--annotator')
    for hint, names in (('--annotator', [person] if person else []), ('--invite', invited)):
        bad = [name for name in names if not ANNOTATOR.fullmatch(name)]
        if bad:
            raise click.BadParameter(f'{bad[0]!r}: use 1-64 letters, digits and _ . @ -', param_hint=hint)
    if invited and (not people or is_loopback(host) or port == 0):
        raise click.BadParameter('invites are for people beyond loopback (--annotator people --host ADDR) on a fixed '
            '--port', param_hint='--invite')
    checked = set(range(rounds.CHECK_SEED, rounds.CHECK_SEED + count * check))
    for where, seeds in (('a round\'s bank', set(range(bank_seed, bank_seed + count * bank_size))), ('a check', checked)):
        if held_out & seeds:
            raise click.BadParameter(f'seed {min(held_out & seeds)} is also in {where}; held-out seeds must be new',
                param_hint='--eval-seeds')
    if checked & set(range(bank_seed, bank_seed + count * bank_size)):
        raise click.BadParameter(f'the banks reach the checks\' seeds ({rounds.CHECK_SEED}-); lower --bank-seed',
            param_hint='--bank-seed')
    if check >= judgements or keep_better and not check:
        raise click.BadParameter('a round asks about its bank too: give fewer --check pairs than --judgements' if check
            else '--keep-better needs --check pairs to decide by', param_hint='--check')
    path = network_path(network, trust_pickle)
    held = [] if trust_pickle else held_pickles(outdir)
    if held:
        raise click.ClickException(f'{held[0]}: resuming loads the network pickles of this run folder, and loading a '
            'pickle can run code stored in it; pass --trust-pickle if the folder is yours')
    conditions = network_family(path).conditions(path) or 1               # A flow's pairs join one condition's.
    upfront = upfront or [count * judgements]
    for hint, n, size in (('--judgements', judgements - check, bank_size), *[('--upfront', u, count * bank_size) for u in
            (upfront if train_seeds else [])]):
        if n > conditions * annotators.pair_limit(range(size)):
            raise click.BadParameter(f'{n} judgements need more than a bank of {size} seeds gives', param_hint=hint)
    if train_seeds and people:
        raise click.BadParameter('comparing label efficiency needs a simulated annotator (oracle:NAME)',
            param_hint='--train-seeds')
    settings = dict(network=os.path.abspath(path), rounds=count, judgements=judgements,
        random_share=random_share, bank_size=bank_size, bank_seed=bank_seed, res=res, annotator=annotator,
        gold_taste=gold_taste, check=check, keep_better=keep_better, window=window, temperature=temperature, refit_all=refit_all, kimg=kimg, lambda_r=lambda_r, seed=seed, eval_seeds=eval_seeds, train_args=list(train_args))
    try:
        if train_seeds:
            summary = label_efficiency.run(outdir, settings, train_seeds, upfront, progress=click.echo, nproc=nproc)
            click.echo(label_efficiency.describe(summary) + f'Report: {os.path.join(outdir, label_efficiency.STEM)}.md')
            return
        keep_settings(outdir, settings, free=('rounds',), added=rounds.ADDED)  # More rounds may follow in it.
        page = None
        if people:
            page = dict(host=host, port=port, allow_hosts=allow_hosts, progress=people_round.Progress(judgements),
                invites=people_round.invite(os.path.join(outdir, rounds.INVITES), invited, host, port))
        summary = rounds.Rounds(outdir, settings, page, nproc).run(lambda row: click.echo(f'round {row["round"]}: ' + (
            'labelled, refitted and tuned (no gold taste)' if row['gold'] is None else f'gold gain '
            f'{row["gold"]["gain_sd"]:+.2f} sd over the start on {row["gold"]["seeds"]} held-out samples')))
    except (RunError, ValueError, LabelError) as err:
        raise click.ClickException(str(err))
    click.echo(rounds.describe(summary))                                    # Also in OUTDIR/rounds.md.


if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
