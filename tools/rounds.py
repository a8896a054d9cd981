"""Online rounds on an EG3D generator: draw from it, label the pairs its reward is least sure of, refit, tune again."""

import os

import click

import dnnlib

from eg3d_rlhf.cli import network_path
from eg3d_rlhf.data import annotators
from eg3d_rlhf.finetune import rounds
from eg3d_rlhf.finetune.options import RunError
from eg3d_rlhf.finetune.overopt_sweep import keep_settings
from eg3d_rlhf.generators.base import seed_ranges


@click.command(context_settings=dict(ignore_unknown_options=True))
@click.option('--outdir', required=True, metavar='DIR',
    help='Where round-0/, round-1/, ... and rounds.json go; what is there already is reused, so a stopped run resumes')
@click.option('--network', default='bundled', show_default=True, metavar='PKL|bundled', help='The generator to start from')
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust --network: loading a pickle can run code stored in it')
@click.option('--rounds', 'count', type=click.IntRange(min=1), default=3, show_default=True, help='Rounds to run')
@click.option('--judgements', type=click.IntRange(min=1), default=150, show_default=True, help='Judgements per round')
@click.option('--random-share', type=click.FloatRange(0, 1), default=0.25, show_default=True,
    help='Share of each later round\'s pairs drawn at random (calibration); the rest go where the reward\'s members disagree most')
@click.option('--bank-size', type=click.IntRange(min=2), default=100, show_default=True,
    help='Samples each round draws from its generator')
@click.option('--bank-seed', type=click.IntRange(min=0), default=20000, show_default=True,
    help='First seed of round 0\'s bank; each round draws the next --bank-size seeds')
@click.option('--res', type=click.IntRange(min=16), default=64, show_default=True, help='Cube resolution of the banks and the gold')
@click.option('--annotator', default='oracle:nose', show_default=True, metavar='oracle:NAME', help='The simulated annotator')
@click.option('--temperature', type=click.FloatRange(min=0), default=0.5, show_default=True, help='Its noise, in sd of its taste')
@click.option('--refit-all/--no-refit-all', default=True, show_default=True, help='Refit each round\'s reward on every judgement so far, the pairs across train_reward\'s splits too (train_reward --refit-all)')
@click.option('--kimg', type=click.FloatRange(min=0, min_open=True), default=0.4, show_default=True, help='Fine-tuning per round')
@click.option('--lambda-r', type=click.FloatRange(min=0), default=10.0, show_default=True, help='Weight of the reward')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Seed of the pair draws, the noise and train.py')
@click.option('--eval-seeds', default='9000-9063', show_default=True, metavar='LIST',
    help='Held-out seeds where each round\'s generator meets the start under the annotator\'s noise-free taste')
@click.argument('train_args', nargs=-1, type=click.UNPROCESSED, metavar='[-- TRAIN.PY FLAGS...]')
def main(outdir, network, trust_pickle, count, judgements, random_share, bank_size, bank_seed, res, annotator, temperature,
        refit_all, kimg, lambda_r, seed, eval_seeds, train_args):
    """Round k draws --bank-size samples from its generator, asks the annotator about --judgements pairs (the pairs
    the previous round's reward ensemble is least sure of, and a --random-share at random), refits the default sigma
    reward on every judgement so far, fine-tunes the generator from where it is with it (train.py, --kimg), and
    measures the result against the start on --eval-seeds. Each round is a folder of the run (round-K/); every step
    is kept, so a stopped run resumes. Flags after -- go to every train.py run.

    \b
    python tools/rounds.py --outdir out/rounds --rounds 3 --judgements 150 --annotator oracle:nose
    """
    try:
        annotators.parse_annotator(annotator)
        held_out = set(seed_ranges(eval_seeds))
    except ValueError as err:
        raise click.BadParameter(str(err))
    drawn = held_out & set(range(bank_seed, bank_seed + count * bank_size))
    if drawn:
        raise click.BadParameter(f'seed {min(drawn)} is also in a round\'s bank; held-out seeds must be new', param_hint='--eval-seeds')
    if judgements > annotators.pair_limit(range(bank_size)):
        raise click.BadParameter(f'{judgements} judgements need more than --bank-size {bank_size} samples give',
            param_hint='--judgements')
    settings = dict(network=os.path.abspath(network_path(network, trust_pickle)), rounds=count, judgements=judgements,
        random_share=random_share, bank_size=bank_size, bank_seed=bank_seed, res=res, annotator=annotator,
        temperature=temperature, refit_all=refit_all, kimg=kimg, lambda_r=lambda_r, seed=seed, eval_seeds=eval_seeds, train_args=list(train_args))
    try:
        keep_settings(outdir, dict(settings, rounds=None))                  # More rounds may follow in the same folder.
        summary = rounds.Rounds(outdir, settings).run(lambda row: click.echo(f'round {row["round"]}: gold gain '
            f'{row["gold"]["gain_sd"]:+.2f} sd over the start on {row["gold"]["seeds"]} held-out seeds'))
    except (RunError, ValueError) as err:
        raise click.ClickException(str(err))
    text = rounds.describe(summary)
    with dnnlib.util.atomic_write(os.path.join(outdir, "rounds.md"), "w", encoding="utf-8") as f:
        f.write(text)
    click.echo(text)


if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
