"""Simulated annotators over a sample bank: pairwise judgements (JSONL), good/bad lists, and the taste scores."""

import click
import numpy as np
from tqdm import tqdm

from eg3d_rlhf.cli import (SEED, FINITE, OUT_FILE, FiniteRange, all_or_nothing, force_option, one_line_errors, open_bank,
    refuse_overwrite)
from eg3d_rlhf.data import annotators
from eg3d_rlhf.data.bank import BankError
from eg3d_rlhf.data.preferences import write_id_list, write_judgements
from eg3d_rlhf.data.scores import write_scores
from eg3d_rlhf.synthetic import heads

#----------------------------------------------------------------------------

def taste_scores(bank, taste, level):
    """{id: taste score} over the whole bank, with a progress bar."""
    with tqdm(total=len(bank), desc=f'oracle:{taste}', unit='sample') as bar, one_line_errors(BankError):
        return annotators.taste_scores(taste, bank, level, progress=bar.update)      # A slab not finite: one line.


def parse_annotator(ctx, param, value):
    try:
        return annotators.parse_annotator(value)
    except ValueError as err:
        raise click.BadParameter(str(err))


def common(f):
    """Options every subcommand takes."""
    for option in reversed([
        click.option('--bank', 'bank_dir', required=True, metavar='BANK', help='Sample bank folder'),
        click.option('--annotator', required=True, callback=parse_annotator, metavar='oracle:NAME',
            help=f'Simulated annotator: {", ".join("oracle:" + t for t in annotators.TASTES)}, or '
                f'oracle:region:PART (one facial part alone, PART: {", ".join(heads.PARTS)})'),
        click.option('--temperature', type=FiniteRange(min=0), default=0.5, show_default=True,
            help='Bradley-Terry noise in standard deviations of the taste (0 = noise-free)'),
        click.option('--level', type=FINITE, default=10, show_default=True, help='Raw sigma level of the surface'),
        click.option('--seed', type=SEED, default=0, show_default=True, help='Seed of the pair draw and the noise'),
        click.option('--scores-out', type=OUT_FILE, metavar='CSV', help="Also write the taste's noise-free scores as id,reward"),
        click.option('--dry-run', is_flag=True, help='Print what would be done; write nothing'),
        force_option,
    ]):
        f = option(f)
    return f

#----------------------------------------------------------------------------

@click.group()
def main():
    """Judge a bank's samples with a simulated annotator (a geometric taste plus Bradley-Terry noise)."""


@main.command()
@common
@click.option('--pairs', 'num_pairs', type=click.IntRange(min=1), required=True, help='Distinct random pairs to judge')
@click.option('--theta', type=FiniteRange(min=1), default=1.0, show_default=True, help='Rao-Kupper tie parameter (1 = no ties)')
@click.option('--same-condition', is_flag=True, help="Pair only samples of one condition (a flow bank's meta.json condition)")
@click.option('--out', type=OUT_FILE, required=True, metavar='JSONL', help='Judgement file to write (atomically; an existing one needs --force)')
def pairs(bank_dir, annotator, temperature, level, seed, scores_out, dry_run, force, num_pairs, theta, same_condition, out):
    """Write --pairs judgements of random distinct pairs in the JSONL preference format.

    \b
    python tools/annotate.py pairs --bank out/bank --annotator oracle:nose --pairs 4000 --out labels.jsonl
    """
    bank = open_bank(bank_dir)
    groups = None
    if same_condition:
        groups = {k: bank.meta(k).get('condition') for k in bank.ids}
        if None in groups.values():
            raise click.BadParameter(f'{bank_dir} has samples without a condition', param_hint='--same-condition')
    limit = annotators.pair_limit(bank.ids, groups)
    if num_pairs > limit:
        raise click.BadParameter(f'{num_pairs} pairs asked for, but {len(bank)} samples give only {limit}'
            + (' within their conditions' if groups else ''), param_hint='--pairs')
    refuse_overwrite(out, scores_out, force=force, inputs={'--bank': bank_dir})
    if dry_run:
        print(f'would score {len(bank)} samples of {bank_dir} with oracle:{annotator} and write {num_pairs} judgements '
            f'(temperature {temperature}, theta {theta}) to {out}')
        return
    oracle = annotators.OracleAnnotator(annotator, taste_scores(bank, annotator, level), temperature=temperature,
        theta=theta, seed=seed)
    judgements = oracle.judgements(oracle.draw_pairs(bank.ids, num_pairs, groups))
    with all_or_nothing(out, scores_out):               # A full disk at the second file: the first goes too.
        write_judgements(out, judgements)
        if scores_out:
            write_scores(scores_out, oracle.z)
    agree = np.mean([j.choice == j.extra['noise_free'] for j in judgements])
    ties = sum(j.choice == 'tie' for j in judgements)
    print(f'{out}: {len(judgements)} judgements by oracle:{annotator}; {100 * agree:.1f}% agree with the noise-free '
        f'choice, {ties} ties')


@main.command('good-bad')
@common
@click.option('--good', 'good_out', type=OUT_FILE, required=True, metavar='TXT', help='List of samples labelled good (one id per line)')
@click.option('--bad', 'bad_out', type=OUT_FILE, required=True, metavar='TXT', help='List of samples labelled bad')
@click.option('--bad-quantile', type=FiniteRange(min=0, max=1), default=0.5, show_default=True,
    help="Bad: the annotator's score is at most this quantile of the bank's taste scores")
@click.option('--good-quantile', type=FiniteRange(min=0, max=1), default=0.5, show_default=True,
    help='Good: at least this quantile; scores between the two are left out (DreamCS\'s middle band)')
@click.option('--given-scores-out', type=OUT_FILE, metavar='CSV', help="Also write the scores the annotator gave (taste plus "
    "its noise: what the bands cut) as id,reward; train_reward.py --objective=dreamcs regresses on them (--scores)")
def good_bad(bank_dir, annotator, temperature, level, seed, scores_out, dry_run, force, good_out, bad_out, bad_quantile,
        good_quantile, given_scores_out):
    """Label samples good or bad (unpaired) by the score the annotator gives, z plus logistic noise of scale
    --temperature: bad at most the --bad-quantile of the bank's z, good at least the --good-quantile, the middle band
    left out. Both 0.5 (the default): the median split, good with probability sigmoid((z - median z) / temperature).

    \b
    python tools/annotate.py good-bad --bank out/bank --annotator oracle:nose --good good.txt --bad bad.txt
    """
    if bad_quantile > good_quantile:
        raise click.BadParameter(f'{bad_quantile} is above --good-quantile {good_quantile}; the middle band runs from '
            'the bad quantile up to the good one', param_hint='--bad-quantile')
    refuse_overwrite(good_out, bad_out, scores_out, given_scores_out, force=force, inputs={'--bank': bank_dir})
    bank = open_bank(bank_dir)
    if dry_run:
        print(f'would label {len(bank)} samples of {bank_dir} good or bad with oracle:{annotator} (temperature '
            f'{temperature}, bands at quantiles {bad_quantile:g} and {good_quantile:g}) and write {good_out} and {bad_out}')
        return
    oracle = annotators.OracleAnnotator(annotator, taste_scores(bank, annotator, level), temperature=temperature, seed=seed)
    given = oracle.given_scores(bank.ids)
    labels = oracle.good_bad(bank.ids, bad_quantile, good_quantile, given=given)
    with all_or_nothing(good_out, bad_out, scores_out, given_scores_out):
        for path, wanted in ((good_out, 1), (bad_out, 0)):
            write_id_list(path, [k for k, v in labels.items() if v == wanted],
                comment=f'{"good" if wanted else "bad"} samples by {oracle.name}, temperature {temperature}, quantiles '
                    f'{bad_quantile:g}-{good_quantile:g}')
        for path, values in ((scores_out, oracle.z), (given_scores_out, given)):
            if path:
                write_scores(path, values)
    good = sum(labels.values())
    print(f'{good} good and {len(labels) - good} bad samples written to {good_out}, {bad_out}; '
        f'{len(bank) - len(labels)} in the middle band left out')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
