"""Show over-optimisation: a proxy from few judgements pushed long, proxy and gold against distance, mean vs conservative."""

import os

import click
import tqdm

from eg3d_rlhf.cli import FiniteRange
from eg3d_rlhf.data.annotators import IDEAL_TASTES, TASTES
from eg3d_rlhf.finetune import overopt_sweep
from eg3d_rlhf.finetune.options import RunError
from eg3d_rlhf.generators.base import seed_ranges
from eg3d_rlhf.rewards.aggregate import AGGREGATES

#----------------------------------------------------------------------------

def seeds_of(flag, text):
    try:
        return seed_ranges(text)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint=flag) from None

#----------------------------------------------------------------------------

@click.command(context_settings=dict(ignore_unknown_options=True))
@click.option('--outdir', metavar='DIR', required=True, help='Where the bank, labels, proxy, runs and the summary '
    '(overoptimization.json, .md, .png) go; what is there already is reused, so a stopped sweep resumes')
@click.option('--generator', type=click.Choice(sorted(overopt_sweep.NETWORKS)), default='eg3d', show_default=True,
    help='eg3d: the bundled EG3D generator, tuned by the reward phase; flow: the bundled flow model, tuned by Flow-GRPO')
@click.option('--taste', type=click.Choice(sorted(TASTES) + sorted(IDEAL_TASTES)), default='nose', show_default=True,
    help='The simulated taste that labels the pairs and is the gold standard')
@click.option('--judgements', type=click.IntRange(min=10), default=200, show_default=True,
    help='Judgements the proxy is fitted to')
@click.option('--bank-seeds', metavar='LIST', help='Seeds of the labelled bank (a flow\'s under each condition)  '
    '[default: eg3d 0-299, flow 0-37]')
@click.option('--res', type=click.IntRange(min=16), default=64, show_default=True, help='Cube resolution of the bank')
@click.option('--label-seed', type=int, default=0, show_default=True, help='Seed of the simulated annotator')
@click.option('--aggregates', metavar='LIST', default='mean,min', show_default=True,
    help=f'Aggregates of the proxy\'s members to run, comma-separated ({", ".join(AGGREGATES)}); mean is the baseline')
@click.option('--aggregate-lambda', type=FiniteRange(min=0), default=1.0, show_default=True,
    help='Weight of the members\' spread in mean-std and uwo')
@click.option('--train-seeds', metavar='LIST', default='0', show_default=True, help='train.py --seed of each run')
@click.option('--kimg', type=FiniteRange(min=0, min_open=True), default=2.0, show_default=True,
    help='eg3d: length of each run')
@click.option('--tick', type=FiniteRange(min=0, min_open=True), default=0.1, show_default=True,
    help='eg3d: kimg between the panel\'s records')
@click.option('--lambda-r', type=FiniteRange(min=0), default=10.0, show_default=True,
    help='eg3d: weight of the reward')
@click.option('--iterations', type=click.IntRange(min=1), default=24, show_default=True,
    help='flow: Flow-GRPO iterations of each run')
@click.option('--probe-every', type=click.IntRange(min=1), default=2, show_default=True,
    help='flow: iterations between the probe\'s records')
@click.option('--panel-seeds', metavar='LIST', help='Seeds the proxy and gold are measured on every tick (a flow\'s '
    'under each condition)  [default: eg3d 3000-3063, flow 3000-3003]')
@click.argument('train_args', nargs=-1, type=click.UNPROCESSED, metavar='[-- TRAIN.PY FLAGS...]')
def main(outdir, generator, taste, judgements, bank_seeds, res, label_seed, aggregates, aggregate_lambda, train_seeds,
        kimg, tick, lambda_r, iterations, probe_every, panel_seeds, train_args):
    """A bank of the bundled EG3D generator (or flow model), JUDGEMENTS judgements of TASTE, the default sigma reward
    fitted to them (the proxy), then one train.py run per aggregate and training seed with --gold-taste=TASTE; writes the
    proxy and gold of every run against its distance from the start, the fitted gold curves and each aggregate against
    the mean. Flags after -- go to every train.py run (e.g. -- --glr=0.004, or for a flow -- --grpo-lr=0.001)."""
    flow = generator == 'flow'
    source = click.get_current_context().get_parameter_source
    for name in ('kimg', 'tick', 'lambda_r') if flow else ('iterations', 'probe_every'):
        if source(name) == click.core.ParameterSource.COMMANDLINE:
            raise click.BadParameter(f'is for --generator={"eg3d" if flow else "flow"}', param_hint='--' +
                name.replace('_', '-'))
    bank_seeds = bank_seeds or ('0-37' if flow else '0-299')
    panel_seeds = panel_seeds or ('3000-3003' if flow else '3000-3063')
    aggs = [a.strip() for a in aggregates.split(',') if a.strip()]
    bad = [a for a in aggs if a not in AGGREGATES]
    if bad or 'mean' not in aggs:
        raise click.BadParameter(f'{bad[0]!r} is no aggregate' if bad else 'mean must be among them (the baseline)',
            param_hint='--aggregates')
    seeds = [seeds_of(flag, text) for flag, text in (('--train-seeds', train_seeds), ('--panel-seeds', panel_seeds),
        ('--bank-seeds', bank_seeds))][0]
    settings = dict(taste=taste, judgements=judgements, bank_seeds=bank_seeds, res=res, label_seed=label_seed,
        aggregate_lambda=aggregate_lambda, panel_seeds=panel_seeds, train_args=train_args,
        **(dict(generator=generator, iterations=iterations, probe_every=probe_every) if flow else
        dict(kimg=kimg, tick=tick, lambda_r=lambda_r)))
    try:
        overopt_sweep.keep_settings(outdir, settings)
    except RunError as err:
        raise click.ClickException(str(err))
    try:
        click.echo('the proxy: bank, judgements and reward (reused when there)')
        reward = overopt_sweep.proxy(outdir, taste, judgements, bank_seeds, res, label_seed, generator)
        runs = []
        for agg, seed in tqdm.tqdm([(a, s) for s in seeds for a in aggs], desc='runs', unit='run'):
            pg = overopt_sweep.run(outdir, reward, agg, seed, taste, kimg, tick, lambda_r, aggregate_lambda, panel_seeds,
                train_args, generator, iterations, probe_every)
            runs.append(dict(aggregate=agg, seed=seed, **overopt_sweep.describe(pg), curves=pg))
    except RunError as err:
        raise click.ClickException(str(err))
    overopt_sweep.write(outdir, runs, settings)
    click.echo(open(os.path.join(outdir, 'overoptimization.md'), encoding='utf-8').read())

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()
