"""Pairwise labeling by people: a local web page ("which shape is better?") that appends judgements, and agreement stats."""

import http.server
import ipaddress
import json
import os
import re
import socket
import sys

import click
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # Run from anywhere.

import dnnlib                                                                       # noqa: E402
from eg3d_rlhf.data import labeling  # noqa: E402
from eg3d_rlhf.data.bank import IMAGE_FILE, Bank, BankError, preview_file                # noqa: E402
from eg3d_rlhf.data.preferences import CHOICES, LabelError, load_judgements              # noqa: E402
from eg3d_rlhf.geometry.preview import VIEWS                                                 # noqa: E402
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, load_reward         # noqa: E402
from tools.score_bank import check_grid, score_samples                              # noqa: E402

#----------------------------------------------------------------------------

PAGE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'label_page.html')
SERVED = frozenset([preview_file(v) for v in VIEWS] + [IMAGE_FILE])  # The only files of a sample folder people see.
SAMPLE_FILE = re.compile(r'/bank/([A-Za-z0-9_.-]+)/([a-z_]+\.png)')   # Matched on the raw path: nothing is decoded.
ANNOTATOR = re.compile(r'[A-Za-z0-9_.@-]{1,64}')
LOOPBACK = '127.0.0.1'
MAX_BODY = 4096
DEFAULT_PAIRS = 200


class LabelServer(http.server.ThreadingHTTPServer):
    """The page, its API and the bank's pictures; one LabelSession per server (one annotator)."""
    daemon_threads = True

    def __init__(self, address, bank, session):
        if ':' in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.bank, self.session = bank, session
        with open(PAGE_FILE, 'rb') as f:
            self.page = f.read()

    def sample_file(self, path):
        """The file a /bank/<id>/<name>.png path names, or None unless id is in the bank and name is a picture."""
        m = SAMPLE_FILE.fullmatch(path)
        if m is None or m.group(1) not in self.bank or m.group(2) not in SERVED:
            return None
        return self.bank.path(m.group(1), m.group(2))


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = 'eg3d-rlhf-label'

    def log_message(self, format, *args):               # Quiet: the terminal shows progress, not every picture.
        pass

    def reply(self, status, body, content_type):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, status, data):
        self.reply(status, json.dumps(data).encode('utf-8'), 'application/json')

    def not_found(self):
        self.reply_json(404, dict(error='not found'))

    def do_GET(self):
        path = self.path.split('?', 1)[0]
        if path == '/':
            return self.reply(200, self.server.page, 'text/html; charset=utf-8')
        if path == '/api/state':
            return self.reply_json(200, self.server.session.state())
        file = self.server.sample_file(path)
        if file is None or not os.path.isfile(file):
            return self.not_found()
        with open(file, 'rb') as f:
            self.reply(200, f.read(), 'image/png')

    def do_POST(self):
        path = self.path.split('?', 1)[0]
        if path not in ('/api/judge', '/api/undo'):
            return self.not_found()
        if self.headers.get('Content-Type', '').split(';')[0].strip() != 'application/json':
            return self.reply_json(415, dict(error='expected application/json'))   # Other sites' forms cannot post.
        length = self.headers.get('Content-Length', '0')
        if not length.isdigit() or int(length) > MAX_BODY:
            return self.reply_json(413, dict(error=f'expected a Content-Length of at most {MAX_BODY}'))
        try:
            body = json.loads(self.rfile.read(int(length)) or b'{}')
            session = self.server.session
            if path == '/api/undo':
                state = session.undo()
            elif not isinstance(body, dict) or body.get('choice') not in CHOICES:
                return self.reply_json(400, dict(error=f'choice must be one of {", ".join(CHOICES)}'))
            else:
                state = session.judge(str(body.get('a')), str(body.get('b')), body['choice'])
        except json.JSONDecodeError:
            return self.reply_json(400, dict(error='not JSON'))
        except ValueError as err:                       # A stale page, or nothing to undo: show the truth again.
            return self.reply_json(409, dict(error=str(err), state=self.server.session.state()))
        except OSError as err:                          # The judgement is not on disk: the page must not say saved.
            return self.reply_json(500, dict(error=f'not saved: {err}'))
        self.reply_json(200, dict(saved=True, state=state))

#----------------------------------------------------------------------------

def open_bank(path):
    try:
        return Bank(path)
    except BankError as err:
        raise click.ClickException(str(err))


def check_annotator(ctx, param, value):
    if not ANNOTATOR.fullmatch(value):
        raise click.BadParameter(f'{value!r}: use 1-64 letters, digits and _ . @ -')
    return value


def check_host(ctx, param, value):
    if value is not None and not value.strip():
        raise click.BadParameter('an empty address; leave --host out to bind 127.0.0.1')
    return value


def is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == 'localhost'


def reward_scores(reward_path, bank, bank_dir, score):
    """{id: reward} of every sample (or None without `score`, after checking the checkpoint fits the bank)."""
    try:
        model, info = load_reward(reward_path, 'cpu')
    except RewardCheckpointError as err:
        raise click.ClickException(str(err))
    check_grid(info, bank, reward_path, bank_dir)
    return score_samples(model, bank, batch=8, device='cpu') if score else None


def make_session(bank, out, annotator, target, repeat_rate, seed, scores=None):
    """A LabelSession resumed from `out`; pairs at random (seeded) or, given reward scores, closest scores first."""
    rng = np.random.RandomState(seed)
    pairs = labeling.random_pairs(bank.ids, rng) if scores is None else labeling.active_pairs(scores, rng)
    try:
        return labeling.LabelSession(out, annotator, pairs, target, repeat_rate=repeat_rate, seed=seed, known_ids=bank.ids)
    except (LabelError, OSError) as err:
        raise click.ClickException(str(err))

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
@click.option('--active', is_flag=True, help='Pairs with the closest reward scores first (needs --reward-model)')
@click.option('--reward-model', 'reward_path', metavar='PT', help='Reward checkpoint that orders the pairs for --active')
@click.option('--repeat-rate', type=click.FloatRange(0, 1), default=0.05, show_default=True,
    help='Share of pairs that are judged pairs again, sides swapped, for self-consistency')
@click.option('--host', callback=check_host, metavar='ADDR', help=f'Address to listen on  [default: {LOOPBACK}]; '
    'anything else lets other machines in')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Seed of the pair order and repeats')
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
    bank = open_bank(bank_dir)
    limit = len(bank) * (len(bank) - 1) // 2
    target = min(DEFAULT_PAIRS, limit) if target is None else target
    if target > limit:
        raise click.BadParameter(f'{target} pairs asked for, but {len(bank)} samples give only {limit}', param_hint='--pairs')
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise click.ClickException(f'{out}: the folder does not exist')
    host = LOOPBACK if host is None else host
    scores = reward_scores(reward_path, bank, bank_dir, score=not dry_run) if active else None
    session = make_session(bank, out, annotator, target, repeat_rate, seed, scores)
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
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
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
    try:
        judgements = load_judgements(labels, repeats=True)
    except LabelError as err:
        raise click.ClickException(str(err))
    if not judgements:
        raise click.ClickException(f'{labels}: no judgements')
    result = labeling.label_stats(judgements)
    repeats = sum(a['repeats'] for a in result['annotators'].values())
    print(f'{labels}: {len(judgements)} judgements ({repeats} repeats) by {len(result["annotators"])} annotators')
    print(f'{"annotator":<16} {"judged":>6} {"decided":>7} {"ties":>5} {"skips":>5} {"repeats":>7}  self-consistency')
    for name, a in result['annotators'].items():
        sc = a['self_consistency']
        print(f'{name:<16} {a["judgements"]:>6} {a["decided"]:>7} {a["ties"]:>5} {a["skips"]:>5} {a["repeats"]:>7}  '
            f'{sc["agreed"]}/{sc["pairs"]} {percent(sc["rate"])}')
    for p in result['pairs']:
        kappa = 'n/a' if p['kappa'] is None else f'{p["kappa"]:.3f}'
        print(f'{" vs ".join(p["annotators"])}: {p["shared"]} shared pairs, agreement {p["agreed"]}/{p["shared"]} '
            f'{percent(p["agreement"])}, Cohen\'s kappa {kappa}')
    if json_out:
        with dnnlib.util.atomic_write(json_out, 'w', encoding='utf-8') as f:
            json.dump(result, f, indent=2)
            f.write('\n')


def percent(rate):
    return '(n/a)' if rate is None else f'({100 * rate:.1f}%)'

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
