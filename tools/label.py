"""Pairwise labeling by people: a local web page ("which shape is better?") that appends judgements, and agreement stats."""

import contextlib

import click

from eg3d_rlhf.cli import SEED, FiniteRange, one_line_errors, open_bank, warning_lines
from eg3d_rlhf.data import labeling, scores
from eg3d_rlhf.data.bank import write_json
from eg3d_rlhf.data.label_server import LOOPBACK, LabelServer, is_loopback
from eg3d_rlhf.data.preferences import LabelError, LabelWarning, load_judgements
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, load_reward

#----------------------------------------------------------------------------

DEFAULT_PAIRS = 200


def check_annotator(ctx, param, value):
    if not labeling.ANNOTATOR.fullmatch(value):
        raise click.BadParameter(f'{value!r}: use 1-64 letters, digits and _ . @ -')
    return value


def check_host(ctx, param, value):
    if value is not None and not value.strip():
        raise click.BadParameter('an empty address; leave --host out to bind 127.0.0.1')
    return value


def reward_scores(reward_path, bank, bank_dir, score):
    """{id: [every ensemble member's reward]} of every sample (or None without `score`, after checking the checkpoint
    fits the bank)."""
    try:
        reward = load_reward(reward_path, 'cpu')
        scores.check_grid(reward, bank, reward_path, bank_dir)
    except (RewardCheckpointError, scores.ScoresError) as err:
        raise click.ClickException(str(err))
    return scores.score_bank(reward, bank, members=True) if score else None


def make_session(bank, out, annotator, target, repeat_rate, seed, rewards=None):
    """labeling.open_session over the bank's ids (active order given rewards {id: score}), its errors as click's."""
    try:
        with warning_lines(LabelWarning):
            return labeling.open_session(out, annotator, bank.ids, target, repeat_rate=repeat_rate, seed=seed,
                scores=rewards)
    except (LabelError, OSError) as err:
        raise click.ClickException(f'{err} (fix the file, or choose another --out)')


#----------------------------------------------------------------------------

@click.group()
def main():
    """Label pairs of samples by hand in a browser page, and measure how much annotators agree."""


@main.command()
@click.option('--bank', 'bank_dir', required=True, metavar='BANK', help='Sample bank folder')
@click.option('--out', required=True, metavar='JSONL', help='Judgement file, appended to (annotators may share it)')
@click.option('--annotator', required=True, callback=check_annotator, metavar='NAME', help='Who is labeling')
@click.option('--port', type=click.IntRange(0, 65535), default=8765, show_default=True, help='Port (0 = any free one)')
@click.option('--pairs', 'target', type=click.IntRange(min=1), metavar='N',
    help=f'New pairs to judge  [default: {DEFAULT_PAIRS}, or every pair of a smaller bank]')
@click.option('--active', is_flag=True, help="Pairs the reward model is least sure of first: its ensemble's most disputed "
    '(expected information gain), or one model\'s closest scores (needs --reward-model)')
@click.option('--reward-model', 'reward_path', metavar='PT', help='Reward checkpoint that orders the pairs for --active')
@click.option('--repeat-rate', type=FiniteRange(0, 1), default=0.05, show_default=True,
    help='Share of pairs that are judged pairs again, sides swapped, for self-consistency')
@click.option('--host', callback=check_host, metavar='ADDR', help=f'Address to listen on  [default: {LOOPBACK}]; '
    'anything else lets other machines in')
@click.option('--seed', type=SEED, default=0, show_default=True, help='Seed of the pair order and repeats')
@click.option('--dry-run', is_flag=True, help='Print the resolved settings and exit; serve nothing')
def serve(bank_dir, out, annotator, port, target, active, reward_path, repeat_rate, host, seed, dry_run):
    """Serve the labeling page: two samples' geometry previews side by side (click one for its RGB render);
    1 or Left = left better, 2 or Right = right better, t = tie, s = skip, u or Backspace = undo, ? = help.
    Every judgement is on disk before the page says saved; a restart resumes where NAME stopped.

    \b
    python tools/label.py serve --bank out/bank --out labels.jsonl --annotator alice --pairs 300
    """
    if active and not reward_path:
        raise click.UsageError('--active orders pairs by reward scores: pass --reward-model PT')
    if reward_path and not active:
        raise click.UsageError('--reward-model is only used with --active')
    bank = open_bank(bank_dir, check_slabs=active)       # People judge pictures; --active scores the slabs.
    limit = len(bank) * (len(bank) - 1) // 2
    target = min(DEFAULT_PAIRS, limit) if target is None else target
    if target > limit:
        raise click.BadParameter(f'{target} pairs asked for, but {len(bank)} samples give only {limit}', param_hint='--pairs')
    with one_line_errors(LabelError):
        labeling.check_appendable(out)
    host = LOOPBACK if host is None else host
    rewards = reward_scores(reward_path, bank, bank_dir, score=not dry_run) if active else None
    loaded = labeling.file_size(out)
    session = make_session(bank, out, annotator, target, repeat_rate, seed, rewards)   # Refuses a file before any write.
    with contextlib.ExitStack() as held:
        if not dry_run:                                 # One server per file and annotator, for as long as it serves.
            with one_line_errors(LabelError, OSError):
                held.enter_context(labeling.lock_annotator(out, annotator))
            if labeling.file_size(out) != loaded:                     # Another server of NAME wrote before it let go: resume after it.
                session = make_session(bank, out, annotator, target, repeat_rate, seed, rewards)
        state = session.state()
        order = f'active by {reward_path}' if active else f'random, seed {seed}'
        settings = (f'bank {bank_dir} ({len(bank)} samples), out {out}, annotator {annotator}, {state["done"]}/{target} '
            f'judged, order {order}, repeat rate {repeat_rate}')
        if dry_run:
            print(f'would serve http://{host}:{port}/: {settings}')
            return
        try:
            server = LabelServer((host, port), bank, session)
        except OSError as err:
            raise click.ClickException(f'cannot listen on {host}:{port}: {err.strerror or err}')
        if not is_loopback(host):
            print(f'warning: listening on {host}: other machines can reach this page, and it has no login', flush=True)
        print(f'serving http://{host}:{server.server_address[1]}/: {settings}; Ctrl-C stops', flush=True)
        server.run()
        print(f'{session.state()["done"]}/{target} pairs judged by {annotator} in {out}')


@main.command()
@click.argument('labels', type=click.Path(exists=True, dir_okay=False), metavar='LABELS.jsonl')
@click.option('--json', 'json_out', metavar='OUT', help='Also write the numbers as JSON')
def stats(labels, json_out):
    """Judgements per annotator, ties and skips, self-consistency on repeats, and agreement with Cohen's kappa
    between each two annotators on the pairs both judged (undone judgements do not count).

    \b
    python tools/label.py stats labels.jsonl --json agreement.json
    """
    with one_line_errors(LabelError), warning_lines(LabelWarning):
        judgements = load_judgements(labels, repeats=True)
    if not judgements:
        raise click.ClickException(f'{labels}: no judgements')
    result = labeling.label_stats(judgements)
    for line in labeling.describe_stats(labels, judgements, result):
        print(line)
    if json_out:
        write_json(json_out, result)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
