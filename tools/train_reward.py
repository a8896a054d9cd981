"""Train a reward model of a registered kind on a sample bank's pairwise or good/bad labels; report held-out accuracy."""

import os
import shutil

import click

from eg3d_rlhf.analysis import reward_fit
from eg3d_rlhf.cli import (SEED, OUT_FILE, all_or_nothing, device_option, fit_options, force_option, open_reporter, parse_model_config,
    one_line_errors, outermost_new_folder, pick_device, pick_reporter, refuse_overwrite, report_option, side_path)
from eg3d_rlhf.data import preferences, scores
from eg3d_rlhf.data.bank import Bank, BankError
from eg3d_rlhf.rewards import REWARDS, base, build_reward, fitting
from eg3d_rlhf.rewards.checkpoint import save_reward
from eg3d_rlhf.shards import Ranks, ShardError

#----------------------------------------------------------------------------

def parse_split(ctx, param, value):
    try:
        parts = [float(x) for x in value.split(',')]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(p <= 0 for p in parts):
        raise click.BadParameter(f'expected three positive fractions train,val,test, e.g. 0.7,0.15,0.15; got {value!r}')
    return tuple(p / sum(parts) for p in parts)

#----------------------------------------------------------------------------

@click.command()
@click.option('--bank', 'bank_dir', required=True, metavar='BANK', help='Sample bank folder (tools/sample_bank.py)')
@click.option('--labels', 'labels_path', metavar='JSONL', help='Pairwise judgements (Bradley-Terry training)')
@click.option('--good', 'good_path', type=OUT_FILE, metavar='TXT', help='Ids labelled good (unpaired Cauchy-Schwarz training, with --bad)')
@click.option('--bad', 'bad_path', type=OUT_FILE, metavar='TXT', help='Ids labelled bad')
@click.option('--reward', 'kind', type=click.Choice(sorted(REWARDS)), default='sigma', show_default=True, help='Reward model')
@click.option('--out', type=OUT_FILE, required=True, metavar='PT', help='Checkpoint to write; STEM.metrics.jsonl, STEM.report.json and STEM.curves.png go beside it')
@click.option('--truth', 'truth_path', metavar='CSV', help='Noise-free scores (id,reward; e.g. annotate.py --scores-out) for held-out accuracy')
@click.option('--scores', 'scores_path', metavar='CSV', help='Each sample\'s score (id,reward; e.g. annotate.py good-bad --given-scores-out): the MSE targets of --objective=dreamcs')
@click.option('--split', 'fractions', default='0.7,0.15,0.15', show_default=True, callback=parse_split, help='Train,val,test shares of the samples')
@click.option('--split-seed', type=SEED, default=0, show_default=True, help='Seed of the split by sample')
@fit_options('ties', 'epochs', 'l2', 'patience', 'batch', 'lr', 'mirror')          # Defaults and help: FitOptions.
@click.option('--centre/--no-centre', default=None, help='Subtract the training samples\' mean input first  [default: on for '
    f'the kinds that take a reference slab: {", ".join(k for k, c in REWARDS.items() if c.takes_reference)}]')
@fit_options('objective', 'reg_weight', 'cs_lambda', 'seed')
@click.option('--model-config', 'model_config', default='{}', show_default=True, callback=parse_model_config, metavar='JSON',
    help='Constructor arguments of the reward model, e.g. \'{"members": 4, "cells": [6, 6, 6]}\', or the learned CNN: \'{"trunk": "cnn", '
    '"members": 1, "hidden": 512}\'')
@click.option('--members', type=click.IntRange(1, base.MAX_MEMBERS), help='Members of the ensemble, each fitted on its own bootstrap draw of the judgements (sets the model\'s "members")  [default: the model\'s]')
@click.option('--refit-all', is_flag=True, help='Then fit it again on every judgement (the pairs across splits too) with the settings chosen; the held-out accuracy stays the split fit\'s')
@click.option('--dry-run', is_flag=True, help='Validate the inputs and print the plan; train and write nothing')
@force_option
@device_option
@report_option
def main(bank_dir, labels_path, good_path, bad_path, kind, out, truth_path, scores_path, fractions, split_seed, ties, epochs,
        l2, patience, batch, lr, mirror, centre, objective, reg_weight, cs_lambda, seed, model_config, members, refit_all,
        dry_run, force, device_name, report_to):
    """Split the bank's samples into train/val/test (no sample in two splits), fit the reward on the training labels
    with early stopping on validation pairwise accuracy, keep the best epoch, and report held-out pairwise accuracy
    (a model tie counts as wrong) with a 95% Wilson interval. Unless --mirror or --no-mirror says, the reward is fitted
    with and without left-right mirrored pairs and the better on validation kept (a tie mirrors); the report and the
    checkpoint record which, and why.

    \b
    python tools/train_reward.py --bank out/bank --labels labels.jsonl --reward sigma --out reward.pt
    """
    if bool(labels_path) == bool(good_path or bad_path) or bool(good_path) != bool(bad_path):
        raise click.UsageError('give either --labels (pairs) or both --good and --bad (unpaired)')
    ctx, owner = click.get_current_context(), dict(reg_weight='cs-bce', cs_lambda='dreamcs', scores='dreamcs')
    given = [n for n in ('objective', 'reg_weight', 'cs_lambda') if ctx.get_parameter_source(n).name == 'COMMANDLINE']
    for name in given + (['scores'] if scores_path else []):
        if labels_path and name != 'reg_weight':                # --reg-weight with --labels: ignored, as always.
            raise click.UsageError(f'--{name.replace("_", "-")} is for unpaired training (--good and --bad)')
        if owner.get(name, objective) != objective:
            raise click.UsageError(f'--{name.replace("_", "-")} is for --objective={owner[name]}')
    if objective == 'dreamcs' and not scores_path:
        raise click.UsageError("--objective=dreamcs regresses the reward on each sample's score (L_MSE): give --scores "
            'CSV (id,reward), e.g. tools/annotate.py good-bad --given-scores-out')
    try:
        centre = fitting.resolve_centre(kind, centre, model_config)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--centre')
    try:
        probe = build_reward(kind, **(model_config := fitting.with_members(model_config, members)))  # Errors now.
    except (TypeError, ValueError) as err:
        raise click.BadParameter(f'{kind} reward: {err}', param_hint='--model-config')
    report_to = pick_reporter(report_to)
    logs = side_path(out, '.logs') if report_to != 'none' else None     # --report-to's folder: TensorBoard or W&B.
    refuse_overwrite(out, *(side_path(out, s) for s in reward_fit.SIDE_FILES), logs, force=force, inputs={'--bank': bank_dir,
        '--labels': labels_path, '--good': good_path, '--bad': bad_path, '--truth': truth_path, '--scores': scores_path})
    try:
        bank = Bank(bank_dir)
        bank.check_slabs()                                      # Every meta.json and slab file, before any work.
        labels = preferences.training_labels(bank.ids, fractions, seed=split_seed, labels_path=labels_path,
            good_path=good_path, bad_path=bad_path)
        truth = scores.read_scores(truth_path, bank.ids, complete=True) if truth_path else None
        targets = scores.read_scores(scores_path, bank.ids) if scores_path else None
        if objective == 'dreamcs':
            targets = fitting.dreamcs_targets(labels.train['labels'], targets)
    except (BankError, preferences.LabelError, scores.ScoresError, OSError, ValueError) as err:
        raise click.ClickException(str(err))
    print(f'{len(bank)} samples; {labels.mode} per split: {labels.counts}; reward {kind}')
    if dry_run:
        print(f'would train for at most {epochs} epochs and write {out}')
        return
    with one_line_errors(ShardError):
        ranks = Ranks()                                         # Under torchrun: the feature table's batches are shared.
    device = ranks.device(pick_device(device_name))
    spec = REWARDS[kind].default_input(bank.meta(bank.ids[0])['slab'], model_config)  # Its contract on the bank's grid.
    options = fitting.FitOptions(epochs=epochs, patience=patience, batch=batch, lr=lr, ties=ties, mirror=mirror,
        objective=objective, reg_weight=reg_weight, cs_lambda=cs_lambda, seed=seed, l2=tuple(l2))
    fit = lambda log: fitting.fit_reward(kind, bank, labels, spec, options, model_config=model_config, centre=centre,
        truth=truth, scores=targets, device=device, log=log, progress=ranks.main, ranks=ranks, refit=refit_all)
    if not ranks.main:                                          # Every rank fits alike; rank 0 alone writes.
        with one_line_errors(BankError, FloatingPointError):
            fit(None)
        return
    outputs = (out, *(side_path(out, s) for s in reward_fit.SIDE_FILES), logs, outermost_new_folder(out))
    with all_or_nothing(*outputs):                              # A diverged fit or a full disk: none of this run's files.
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        if logs is not None:
            shutil.rmtree(logs, ignore_errors=True)             # Only with --force: a replaced run's log goes too.
        if mirror is None and labels.val_pairs and not (fitting.fits_heads_only(probe) and labels_path):
            print(f'mirroring: auto trains the {kind} reward twice, with and without mirrored inputs, and keeps the better '
                'on validation; --mirror or --no-mirror trains once')
        writer = open_reporter(logs, report_to, name=os.path.basename(side_path(out, '')), config=dict(reward=kind))
        try:
            with fitting.MetricsLog(side_path(out, '.metrics.jsonl'), writer=writer) as log:
                model, fitted = fit(log)
            print(fitting.describe_mirror(fitted['mirror']))
            for key, name in (('test_labels', 'on test labels'), ('test_truth', 'against --truth (all test-sample pairs)')):
                if key in fitted['held_out']:
                    print(f'held-out accuracy {name}: {fitting.describe_held_out(fitted["held_out"][key])}')
            report = dict(bank=os.path.abspath(bank_dir), labels=labels_path, good=good_path, bad=bad_path,
                truth=truth_path, scores=scores_path, split=list(fractions), split_seed=split_seed, **fitted)
            save_reward(out, model, kind, spec, training=report)
            reward_fit.report(out, report, log.records)
            last = log.records[-1].get('step', len(log.records) - 1) if log.records else 0   # MetricsLog's last step.
            writer.image('report/curves', last, side_path(out, '.curves.png'))
        except (BankError, FloatingPointError) as err:          # A slab that is not finite, or a diverged run.
            raise click.ClickException(str(err))
        finally:
            writer.close()
    print(f'wrote {out} ({fitting.describe_fit(report)}) and its metrics, report and curves')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
