"""Train a reward model (sigma, depth or pointcloud) on a sample bank's pairwise or good/bad labels; report held-out accuracy."""

import json
import os
import sys
import time

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # Run from anywhere.

from eg3d_rlhf.data import preferences  # noqa: E402
from eg3d_rlhf.rewards import fitting
from eg3d_rlhf.data.bank import Bank, BankError                                          # noqa: E402
from eg3d_rlhf.rewards import REWARDS, build_reward                                 # noqa: E402
from eg3d_rlhf.rewards.checkpoint import save_reward                                # noqa: E402
from eg3d_rlhf.cli import pick_device, read_scores, side_path                     # noqa: E402

#----------------------------------------------------------------------------

def parse_split(ctx, param, value):
    try:
        parts = [float(x) for x in value.split(',')]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(p <= 0 for p in parts):
        raise click.BadParameter(f'expected three positive fractions train,val,test, e.g. 0.7,0.15,0.15; got {value!r}')
    return tuple(p / sum(parts) for p in parts)


def held_out(name, correct, total):
    lo, hi = reward_training.wilson_interval(correct, total)
    result = dict(correct=correct, total=total, accuracy=correct / max(total, 1), wilson95=[lo, hi])
    print(f'{name}: {100 * result["accuracy"]:.1f}% of {total} pairs (95% Wilson interval {100 * lo:.1f}-{100 * hi:.1f}%)')
    return result


def plot_curves(path, records):
    """Training loss and validation accuracy per epoch, one PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    train = [r for r in records if 'loss' in r]
    val = [r for r in records if 'eval_rewards/accuracies' in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot([r['epoch'] for r in train], [r['loss'] for r in train], marker='o')
    a.set_xlabel('epoch'), a.set_ylabel('training loss')
    b.plot([r['epoch'] for r in val], [r['eval_rewards/accuracies'] for r in val], marker='o', color='tab:green')
    b.set_xlabel('epoch'), b.set_ylabel('validation pairwise accuracy'), b.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

#----------------------------------------------------------------------------

def parse_model_config(ctx, param, value):
    try:
        config = json.loads(value)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f'not JSON ({err.msg})')
    if not isinstance(config, dict) or 'reference_shape' in config:
        raise click.BadParameter('expected a JSON object of constructor arguments (reference_shape is set by --centre)')
    return config


@click.command()
@click.option('--bank', 'bank_dir', required=True, metavar='BANK', help='Sample bank folder (tools/sample_bank.py)')
@click.option('--labels', 'labels_path', metavar='JSONL', help='Pairwise judgements (Bradley-Terry training)')
@click.option('--good', 'good_path', metavar='TXT', help='Ids labelled good (unpaired Cauchy-Schwarz training, with --bad)')
@click.option('--bad', 'bad_path', metavar='TXT', help='Ids labelled bad')
@click.option('--reward', 'kind', type=click.Choice(sorted(REWARDS)), default='sigma', show_default=True, help='Reward model')
@click.option('--out', required=True, metavar='PT', help='Checkpoint to write; STEM.metrics.jsonl, STEM.report.json and STEM.curves.png go beside it')
@click.option('--truth', 'truth_path', metavar='CSV', help='Noise-free scores (id,reward; e.g. annotate.py --scores-out) for held-out accuracy')
@click.option('--split', 'fractions', default='0.7,0.15,0.15', show_default=True, callback=parse_split, help='Train,val,test shares of the samples')
@click.option('--split-seed', type=int, default=0, show_default=True, help='Seed of the split by sample')
@click.option('--ties', type=click.Choice(['drop', 'model']), default='drop', show_default=True, help='Drop ties, or model them (Rao-Kupper)')
@click.option('--epochs', type=click.IntRange(min=1), default=20, show_default=True, help='Most epochs')
@click.option('--patience', type=click.IntRange(min=1), default=4, show_default=True, help='Early stopping: epochs without a better validation accuracy')
@click.option('--batch', type=click.IntRange(min=2), default=16, show_default=True, help='Pairs (or samples, unpaired) per step')
@click.option('--lr', type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help='Learning rate (AdamW)')
@click.option('--mirror/--no-mirror', default=True, show_default=True, help='Random left-right flips while training')
@click.option('--centre/--no-centre', default=None, help='Subtract the training samples\' mean slab first (sigma only)  [default: on for sigma]')
@click.option('--reg-weight', type=click.FloatRange(min=0), default=1.0, show_default=True, help='Unpaired: weight of the score regression term')
@click.option('--seed', type=int, default=0, show_default=True, help='Seed of the initial weights, batch order and flips')
@click.option('--model-config', 'model_config', default='{}', show_default=True, callback=parse_model_config, metavar='JSON',
    help='Constructor arguments of the reward model, e.g. \'{"channels": [8, 16, 32, 64, 64], "hidden": 128}\'')
@click.option('--dry-run', is_flag=True, help='Validate the inputs and print the plan; train and write nothing')
@click.option('--device', 'device_name', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
def main(bank_dir, labels_path, good_path, bad_path, kind, out, truth_path, fractions, split_seed, ties, epochs, patience,
        batch, lr, mirror, centre, reg_weight, seed, model_config, dry_run, device_name):
    """Split the bank's samples into train/val/test (no sample in two splits), fit the reward on the training labels
    with early stopping on validation pairwise accuracy, keep the best epoch, and report held-out pairwise accuracy
    (a model tie counts as wrong) with a 95% Wilson interval.

    \b
    python tools/train_reward.py --bank out/bank --labels labels.jsonl --reward sigma --out reward.pt
    """
    if bool(labels_path) == bool(good_path or bad_path) or bool(good_path) != bool(bad_path):
        raise click.UsageError('give either --labels (pairs) or both --good and --bad (unpaired)')
    if centre and kind != 'sigma':
        raise click.BadParameter(f'the {kind} reward reads the surface, not the density; --centre is for sigma only', param_hint='--centre')
    centre = (kind == 'sigma') if centre is None else centre
    try:
        build_reward(kind, **model_config)                      # A clear error now for an argument the model lacks.
    except (TypeError, ValueError) as err:
        raise click.BadParameter(f'{kind} reward: {err}', param_hint='--model-config')
    try:
        bank = Bank(bank_dir)
        assignment = preferences.split_samples(bank.ids, fractions, seed=split_seed)
        split_ids = {s: [x for x in bank.ids if assignment[x] == s] for s in ('train', 'val', 'test')}
        if labels_path:
            splits = preferences.split_judgements(preferences.load_judgements(labels_path, known_ids=bank.ids), assignment)
            pairs = {s: preferences.to_pairs(splits[s]) for s in ('train', 'val', 'test')}
            train = dict(pairs=pairs['train'][0], ties=pairs['train'][1])
            val_pairs, test_pairs = pairs['val'][0], pairs['test'][0]
            counts = {s: len(splits[s]) for s in splits}
        else:
            labels = preferences.import_good_bad(good_path, bad_path)
            unknown = sorted(set(labels) - set(bank.ids))
            if unknown:
                raise preferences.LabelError(f'{good_path}/{bad_path}: unknown sample id {unknown[0]}')
            by_split = {s: {x: labels[x] for x in split_ids[s] if x in labels} for s in split_ids}
            train = dict(labels=by_split['train'])
            good_bad = lambda d: [(g, b) for g, vg in d.items() if vg == 1 for b, vb in d.items() if vb == 0]
            val_pairs, test_pairs = good_bad(by_split['val']), good_bad(by_split['test'])
            counts = {s: len(by_split[s]) for s in by_split}
        truth = read_scores(truth_path, bank.ids) if truth_path else None
    except (BankError, preferences.LabelError, OSError) as err:
        raise click.ClickException(str(err))
    if not (train.get('pairs') or train.get('labels')) or not val_pairs:
        raise click.ClickException(f'not enough labels for a split by sample: {counts} (label more pairs, or change --split)')
    mode = 'pairs' if labels_path else 'good/bad'
    print(f'{len(bank)} samples; {mode} per split: {counts}; reward {kind}')
    if dry_run:
        print(f'would train for at most {epochs} epochs and write {out}')
        return

    device = pick_device(device_name)
    torch.manual_seed(seed)
    index, inputs = reward_training.normalised_inputs(bank, bank.ids)
    if centre:
        model = build_reward(kind, **model_config, reference_shape=list(inputs.shape[1:]))
        model.set_reference(reward_training.mean_input(index, inputs, split_ids['train']))
    else:
        model = build_reward(kind, **model_config)
    metrics_path = side_path(out, '.metrics.jsonl')
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    records = []
    with open(metrics_path, 'w', encoding='utf-8') as metrics:
        def log(record):
            records.append(record)
            metrics.write(json.dumps(record) + '\n')
            metrics.flush()
        options = reward_training.FitOptions(epochs=epochs, patience=patience, batch=batch, lr=lr, ties=ties,
            mirror=mirror, reg_weight=reg_weight, seed=seed)
        fitter = reward_training.RewardFitter(model, index, inputs, options, device=device, log=log)
        start = time.time()
        history = fitter.fit(train, val_pairs)
        seconds = time.time() - start
    offset = float(np.mean(list(fitter.scores(split_ids['train']).values())))
    reward_training.centre_scores(model, offset)                   # Mean score 0 over the training samples.

    test_ids = split_ids['test']
    scores = fitter.scores(test_ids)
    results = dict(test_labels=held_out('held-out accuracy on test labels', *reward_training.pairwise_accuracy(scores, test_pairs)))
    if truth is not None:
        truth_pairs = reward_training.all_pairs_by_truth(truth, test_ids)
        results['test_truth'] = held_out('held-out accuracy against --truth (all test-sample pairs)',
            *reward_training.pairwise_accuracy(scores, truth_pairs))
    slab = bank.meta(bank.ids[0])['slab']
    report = dict(bank=os.path.abspath(bank_dir), centre=centre, labels=labels_path, good=good_path, bad=bad_path, truth=truth_path,
        reward=kind, config=model.config, options=options.__dict__, split=list(fractions), split_seed=split_seed,
        counts=counts, epochs_run=len(history), best_epoch=int(np.argmax(history)), val_accuracy=history, centred_by=offset,
        train_seconds=seconds, held_out=results)
    save_reward(out, model.cpu(), kind, slab, training=json.loads(json.dumps(report)))
    with open(side_path(out, '.report.json'), 'w', encoding='utf-8') as f:
        json.dump(report, f, indent=2)
    plot_curves(side_path(out, '.curves.png'), records)
    print(f'wrote {out} (best epoch {report["best_epoch"]} of {len(history)}, {seconds:.0f} s) and its metrics, report and curves')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
