"""Reward learning curves: held-out noise-free accuracy against simulated judgements, per taste, random vs active pairs."""

import os

import click

from eg3d_rlhf.analysis import rating_trials, reward_curves
from eg3d_rlhf.cli import (OUT_DIR, FiniteRange, device_option, fit_options, force_option, one_line_errors, open_bank,
    parse_model_config, parse_range, pick_device, refuse_overwrite)
from eg3d_rlhf.data import annotators
from eg3d_rlhf.data.scores import ScoresError
from eg3d_rlhf.rewards import REWARDS, build_reward, fitting

OUTPUTS = reward_curves.OUTPUTS

#----------------------------------------------------------------------------

def parse_names(choices):
    def parse(ctx, param, value):
        if value is None:
            return None
        names = [v.strip() for v in value.split(',') if v.strip()]
        bad = [v for v in names if v not in choices]
        if bad or not names:
            raise click.BadParameter(f'{bad[0] if bad else value!r}: choose from {", ".join(choices)}')
        return names
    return parse


def parse_sizes(ctx, param, value):
    try:
        return tuple(reward_curves.CurveOptions(sizes=parse_range(value)).sizes)
    except ValueError as err:
        raise click.BadParameter(str(err))

#----------------------------------------------------------------------------

@click.command()
@click.option('--bank', 'bank_dir', required=True, metavar='BANK', help='Sample bank folder (tools/sample_bank.py)')
@click.option('--outdir', type=OUT_DIR, required=True, metavar='DIR', help='Where report.json/.html, curves.png and trials.jsonl go')
@click.option('--tastes', default='nose,smooth,closed', show_default=True, callback=parse_names(tuple(annotators.TASTES)),
    help='Simulated tastes, comma-separated')
@click.option('--policies', callback=parse_names(reward_curves.POLICIES), help="Pair choice: random, or active (the "
    "labeling page's --active on the model fitted so far)  [default: random,active; random with --objectives]")
@click.option('--sizes', default='250,500,1000,2000', show_default=True, callback=parse_sizes, metavar='LIST', help='Judgements at which the reward is fitted and measured')
@click.option('--seeds', 'seeds', type=parse_range, default='0-2', show_default=True, metavar='LIST', help='Trials per taste and policy')
@click.option('--temperature', type=FiniteRange(min=0), default=0.5, show_default=True, help='Annotator noise in taste standard deviations (0.5: ~83% agree with the noise-free choice)')
@click.option('--agreement', type=FiniteRange(min=0.5, max=1, min_open=True, max_open=True), help='Instead of --temperature: '
    'set each taste\'s noise so this share of random pairs is judged as noise-free (0.83: the issue\'s people)')
@click.option('--test-share', type=FiniteRange(min=0, max=1, min_open=True, max_open=True), default=0.2, show_default=True, help='Share of the samples held out, never judged')
@click.option('--warmup', type=click.IntRange(min=10), default=100, show_default=True, help='Active: random judgements before the first model')
@click.option('--round', 'round_size', type=click.IntRange(min=1), default=100, show_default=True, help='Active: judgements between refits')
@click.option('--level', type=FiniteRange(), default=10, show_default=True, help='Raw sigma level of the tastes\' surface')
@fit_options('mirror', 'cs_lambda', 'reg_weight', 'epochs', 'patience', 'batch', 'lr')
@click.option('--compare-mirror', is_flag=True, help='Fit every trial mirrored, plain and auto (curves POLICY/mirrored, '
    'POLICY/plain, POLICY/auto; the features once) and report how far auto falls below the better fixed setting')
@click.option('--objectives', callback=parse_names(tuple(rating_trials.OBJECTIVES)), metavar='LIST', help='Instead, '
    'compare objectives on the same tastes and held-out samples: bt (SIZE random judgements), and on one session of SIZE '
    'ratings banded good/bad: cs-bce, dreamcs (MSE on the given scores + --cs-lambda x -D_CS), dreamcs-l0 (lambda 0)')
@click.option('--bad-quantile', type=FiniteRange(min=0, max=1), default=0.477, show_default=True,
    help="--objectives: bad when a sample's mean rating is at most this quantile of the rated samples' taste")
@click.option('--good-quantile', type=FiniteRange(min=0, max=1), default=0.577, show_default=True,
    help='--objectives: good when at least this quantile; the band between is left out (DreamCS: >= 4.0 / <= 3.5)')
@click.option('--reward', 'kind', type=click.Choice(sorted(REWARDS)), default='sigma', show_default=True, help='Reward model')
@click.option('--model-config', default='{}', show_default=True, callback=parse_model_config, metavar='JSON', help='Constructor arguments of the reward model')
@click.option('--dry-run', is_flag=True, help='Check the inputs and print the plan; fit and write nothing')
@force_option
@device_option
def main(bank_dir, outdir, tastes, policies, sizes, seeds, temperature, agreement, test_share, warmup, round_size, level, mirror,
        cs_lambda, reg_weight, epochs, patience, batch, lr, compare_mirror, objectives, bad_quantile, good_quantile, kind,
        model_config, dry_run, force, device_name):
    """For each taste, policy and seed, a simulated annotator judges pairs of the bank's pool samples (random pairs,
    or the labeling page's --active order on the reward fitted so far, refitted every --round judgements); at each of
    --sizes the reward is fitted on every judgement made (a tenth kept for validation) and scored against the taste's
    noise-free preference on every pair of the held-out samples. Writes the trials, the mean and 95% t-interval over
    seeds, and curves.png.

    \b
    python tools/reward_curve.py --bank out/bank --outdir out/curves
    python tools/reward_curve.py --bank out/bank --outdir out/objectives --objectives bt,cs-bce,dreamcs,dreamcs-l0
    """
    if compare_mirror and objectives:
        raise click.UsageError('--compare-mirror and --objectives compare different things; pass one')
    if compare_mirror and mirror is not None:
        raise click.UsageError('--compare-mirror fits every mirror setting; leave out --mirror/--no-mirror')
    policies = policies or (['random'] if objectives else list(reward_curves.POLICIES))
    try:
        options = reward_curves.CurveOptions(sizes=sizes, seeds=tuple(seeds), temperature=temperature,
            agreement=agreement, test_share=test_share, warmup=warmup, round=round_size, bad_quantile=bad_quantile,
            good_quantile=good_quantile)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--bad-quantile')
    try:
        build_reward(kind, **model_config)
    except (TypeError, ValueError) as err:
        raise click.BadParameter(f'{kind} reward: {err}', param_hint='--model-config')
    refuse_overwrite(*(os.path.join(outdir, name) for name in OUTPUTS), force=force, inputs={'--bank': bank_dir})
    bank = open_bank(bank_dir)
    fits = reward_curves.fit_count(tastes, policies, options, 3 if compare_mirror else 1, objectives)
    print(f'{len(bank)} samples ({len(bank) - round(test_share * len(bank))} to judge); tastes {", ".join(tastes)}; '
        f'policies {", ".join(policies)}; ' + (f'objectives {", ".join(objectives)} (bands at quantiles '
        f'{bad_quantile:g} and {good_quantile:g}); ' if objectives else '')
        + f'sizes {list(sizes)}; {len(seeds)} seeds: {fits} fits of the {kind} reward')
    if dry_run:
        return
    os.makedirs(outdir, exist_ok=True)
    with one_line_errors(ScoresError):
        truths = reward_curves.taste_truths(bank, tastes, level, outdir)
    spec = REWARDS[kind].default_input(bank.meta(bank.ids[0])['slab'], model_config)
    with one_line_errors(ValueError):
        inputs = fitting.prepared_inputs(bank, bank.ids, spec)
    summary = reward_curves.report(inputs, truths, outdir, policies, options, bank_dir, kind=kind,
        model_config=model_config, mirror=mirror, device=pick_device(device_name), compare_mirror=compare_mirror,
        fit_options=fitting.FitOptions(cs_lambda=cs_lambda, reg_weight=reg_weight, epochs=epochs, patience=patience,
            batch=batch, lr=lr), objectives=objectives)
    for line in reward_curves.describe(summary['curves'], summary['active_vs_random'], summary.get('auto_vs_fixed'),
            summary.get('objectives_vs_bt')):
        print(line)
    print(f'wrote {outdir}/report.html, report.json, curves.png and trials.jsonl')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
