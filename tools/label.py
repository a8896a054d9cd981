"""Labeling by people: pairs, blind same-seed studies and 1-5 ratings on a local web page; agreement and scores."""

import socket

import click

from eg3d_rlhf.analysis import study as scoring
from eg3d_rlhf.cli import (OUT_FILE, FiniteRange, bank_scores, check_bank_grid, force_option, one_line_errors, open_bank,
    open_reward, refuse_overwrite, warning_lines)
from eg3d_rlhf.data import invites, labeling
from eg3d_rlhf.data.bank import write_json
from eg3d_rlhf.data.label_pages import (check_annotator, need_annotator, pair_options, pair_target, rate_options,
    serve_options, serve_pairs, serve_ratings, serve_study, study_options)
from eg3d_rlhf.data.label_server import LabelServer, is_loopback  # noqa: F401 (tests reach the server through the tool)
from eg3d_rlhf.data.preferences import LabelError, LabelWarning, load_judgements

#----------------------------------------------------------------------------

def reward_scores(reward_path, bank, score):
    """{id: [each ensemble member's reward]} of every sample (None without `score`, once the checkpoint fits the bank)."""
    reward = open_reward(reward_path, 'cpu')
    check_bank_grid(bank, reward, reward_path)
    return bank_scores(bank, reward, members=True) if score else None


@click.group()
def main():
    """Label samples by hand in a browser page (pairs, blind studies, ratings), and score what people said."""


@main.command()
@serve_options
def serve(bank_dir, out, target, active, reward_path, repeat_rate, annotator, port, host, allow_hosts, seed, dry_run):
    """Serve the labeling page: two samples' geometry previews side by side (click one for its RGB render);
    1 or Left = left better, 2 or Right = right better, t = tie, s = skip, u or Backspace = undo, ? = help.
    Every judgement is on disk before the page says saved; a restart resumes where NAME stopped.

    \b
    python tools/label.py serve --bank out/bank --out labels.jsonl --annotator alice --pairs 300
    """
    if active != bool(reward_path):
        raise click.UsageError('--active orders pairs by reward scores: pass --reward-model PT' if active else
            '--reward-model is only used with --active')
    need_annotator(annotator, host)
    bank = open_bank(bank_dir, check_slabs=active)      # People judge pictures; --active scores the slabs.
    target = pair_target(target, len(bank))
    with one_line_errors(LabelError, OSError):
        labeling.check_appendable(out)
        rewards = reward_scores(reward_path, bank, score=not dry_run) if active else None
        serve_pairs(bank, bank_dir, out, target, repeat_rate, annotator, port, host, seed or 0, dry_run, rewards,
            order=f'active by {reward_path}' if active else None, allow_hosts=allow_hosts)


@main.command()
@study_options
def study(**options):
    """Serve a blind same-seed study: each id of two banks drawn with the same --seeds (tools/sample_bank.py, one
    bank per generator), original against tuned, the tuned side random per pair and hidden behind opaque tokens
    until `score-study`. Keys as `serve`; a restart resumes (the key is kept).

    \b
    python tools/label.py study --original out/bank-original --tuned out/bank-tuned --out study.jsonl --annotator alice
    """
    with one_line_errors(LabelError, OSError):
        serve_study(**options)


@main.command()
@rate_options
def rate(**options):
    """Serve a ratings page: one sample at a time (its bank hidden) rated 1-5 on each criterion by keys 1-5 or
    clicks (the last criterion saves); s skips, u or Backspace go back or undo.

    \b
    python tools/label.py rate --bank out/bank-original --bank out/bank-tuned --criteria geometry,detail,symmetry --out ratings.jsonl --annotator alice
    """
    with one_line_errors(LabelError, OSError):
        serve_ratings(**options)


@main.command('score-study')
@click.option('--out', required=True, type=click.Path(exists=True, dir_okay=False), metavar='JSONL', help='The study')
@click.option('--min-attention', type=FiniteRange(0, 1), default=0.8, show_default=True,
    help='Share of attention checks an annotator must pass not to be flagged')
def score_study(out, min_attention):
    """Unblind a study: tuned's win rate (Wilson 95%, binomial p, Cohen's h) per annotator and pooled, agreement
    (Cohen's and Fleiss' kappa), self-consistency, attention checks; JSONL.score.json and .html.

    \b
    python tools/label.py score-study --out study.jsonl
    """
    with one_line_errors(LabelError), warning_lines(LabelWarning):
        print('\n'.join(scoring.score_study_file(out, min_attention)))


@main.command('score-ratings')
@click.option('--out', required=True, type=click.Path(exists=True, dir_okay=False), metavar='JSONL', help='Ratings file')
@pair_options
def score_ratings(out, tuned, original):
    """Means per criterion and bank (95% t) and tuned minus original per criterion and id; JSONL.score.json, .html.

    \b
    python tools/label.py score-ratings --out ratings.jsonl --tuned out/bank-tuned
    """
    with one_line_errors(LabelError), warning_lines(LabelWarning):
        print('\n'.join(scoring.score_ratings_file(out, tuned, original)))


@main.command()
@click.argument('name', callback=check_annotator)
@click.option('--out', required=True, metavar='JSONL', help='The labels file the server writes (serve, study or rate)')
@click.option('--url', default=f'http://{socket.gethostname()}:8765/', show_default='http://THIS-MACHINE:8765/', help='The page\'s address')
@click.option('--force', is_flag=True, help='Replace NAME\'s link (the old one stops working)')
def invite(name, out, url, force):
    """Print NAME's secret link to a page served beyond loopback (--host); only its sha256 is kept, in JSONL.invites.json.

    \b
    python tools/label.py invite bob --out labels.jsonl --url http://192.168.1.5:8765/
    """
    with one_line_errors(LabelError, OSError):
        print(f'{url.split("?")[0]}?token={invites.invite(out, name, force=force)}')


@main.command()
@click.argument('labels', type=click.Path(exists=True, dir_okay=False), metavar='LABELS.jsonl')
@click.option('--json', 'json_out', type=OUT_FILE, metavar='OUT', help='Also write the numbers as JSON')
@force_option
def stats(labels, json_out, force):
    """Judgements per annotator, ties and skips, self-consistency on repeats, and Cohen's kappa between each two
    annotators on the pairs both judged (undone judgements do not count).

    \b
    python tools/label.py stats labels.jsonl --json agreement.json
    """
    refuse_overwrite(json_out, force=force, inputs={'LABELS': labels})
    with one_line_errors(LabelError), warning_lines(LabelWarning):
        judgements = load_judgements(labels, repeats=True)
    if not judgements:
        raise click.ClickException(f'{labels}: no judgements')
    result = labeling.label_stats(judgements)
    print('\n'.join(labeling.describe_stats(labels, judgements, result)))
    if json_out:
        write_json(json_out, result)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
