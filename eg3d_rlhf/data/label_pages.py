"""The labeling pages run: pairs (serve), blind studies (study) and ratings (rate), their shared options and sessions."""

import math
import sys
import threading
import warnings

import click

from eg3d_rlhf.data import blind_study, labeling, ratings
from eg3d_rlhf.data.bank import Bank, BankError
from eg3d_rlhf.data.invites import Invites
from eg3d_rlhf.data.label_server import (LOOPBACK, PAGE_FILE, RATE_PAGE_FILE, LabelServer, host_name, is_loopback,
    WILDCARDS)
from eg3d_rlhf.data.preferences import LabelError, LabelWarning
from eg3d_rlhf.generators.base import MAX_SEED

#----------------------------------------------------------------------------
# tools/label.py's options.

DEFAULT_PAIRS = 200

def check_annotator(ctx, param, value):
    if value is not None and not labeling.ANNOTATOR.fullmatch(value):
        raise click.BadParameter(f'{value!r}: use 1-64 letters, digits and _ . @ -')
    return value


def check_host(ctx, param, value):
    if value is not None and not value.strip():
        raise click.BadParameter('an empty address; leave --host out to bind 127.0.0.1')
    return LOOPBACK if value is None else value


def check_allowed_host(ctx, param, value):
    """--allow-host's names as the Host check compares them (label_server.host_name: lower case, no port)."""
    names = tuple(host_name(v) for v in value)
    bad = [v for v, name in zip(value, names) if not name or any(c.isspace() or c in '/?#@' for c in v)]
    if bad:
        raise click.BadParameter(f'{bad[0]!r}: give a host name or address as a browser puts it in the address bar, '
            'e.g. labbox.local or 192.168.1.5')
    return names


def page_options(f):
    """--annotator, --port, --host, --seed and --dry-run, as every page takes them."""
    for option in reversed([
        click.option('--annotator', callback=check_annotator, metavar='NAME', help='Who is labeling; needed on '
            'loopback (with --host, names come from invites, and NAME only picks whose progress the console shows)'),
        click.option('--port', type=click.IntRange(0, 65535), default=8765, show_default=True, help='Port (0 = any free one)'),
        click.option('--host', callback=check_host, metavar='ADDR', help=f'Address to listen on  [default: {LOOPBACK}]; '
            'anything else lets other machines in, and then only people with an invite link (label.py invite)'),
        click.option('--allow-host', 'allow_hosts', multiple=True, callback=check_allowed_host, metavar='NAME',
            help='Another name the page may be opened by (the Host header; repeatable). Always accepted: loopback '
            'names and --host; with --host 0.0.0.0 or ::, also this machine\'s hostname, its full name and the '
            'addresses the hostname resolves to'),
        click.option('--seed', type=click.IntRange(0, MAX_SEED), help='Seed of the order  [default: 0]'),
        click.option('--dry-run', is_flag=True, help='Print the resolved settings and exit; serve and write nothing')]):
        f = option(f)
    return f


class Rate(click.FloatRange):
    """A share in [0, 1]; nan and inf refused (click.FloatRange lets nan through)."""
    name = 'rate'

    def __init__(self):
        super().__init__(0, 1)

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f'{value} is not a finite number', param, ctx)
        return value


def serve_options(f):
    """tools/label.py serve's options, after page_options'."""
    f = page_options(f)
    for option in reversed([
        click.option('--bank', 'bank_dir', required=True, metavar='BANK', help='Sample bank folder'),
        click.option('--out', required=True, metavar='JSONL', help='Judgement file, appended to (annotators may share it)'),
        click.option('--pairs', 'target', type=click.IntRange(min=1), metavar='N',
            help=f'New pairs to judge  [default: {DEFAULT_PAIRS}, or every pair of a smaller bank]'),
        click.option('--active', is_flag=True, help="Pairs the reward model is least sure of first: its ensemble's most "
            'disputed (expected information gain), or one model\'s closest scores (needs --reward-model)'),
        click.option('--reward-model', 'reward_path', metavar='PT', help='Reward checkpoint that orders the pairs for --active'),
        click.option('--repeat-rate', type=Rate(), default=0.05, show_default=True,
            help='Share of pairs that are judged pairs again, sides swapped, for self-consistency')]):
        f = option(f)
    return f


def study_options(f):
    """tools/label.py study's options, after page_options'."""
    f = page_options(f)
    for option in reversed([
        click.option('--original', 'original_dir', required=True, metavar='BANK', help='Bank of the original generator'),
        click.option('--tuned', 'tuned_dir', required=True, metavar='BANK', help='Bank of the tuned generator, same ids'),
        click.option('--out', required=True, metavar='JSONL', help='Judgement file; its unblinding key: JSONL.key.json'),
        click.option('--pairs', type=click.IntRange(min=1), metavar='N', help='Ids in the study (a seeded subset)  '
            '[default: all]'),
        click.option('--repeat-rate', type=Rate(), default=0.1, show_default=True,
            help='Share of pairs shown again, sides swapped, for self-consistency'),
        click.option('--attention-rate', type=Rate(), help='Attention checks per pair: a sample against a copy with '
            'floaters, the clean one the answer  [default: 0]'),
        click.option('--force', is_flag=True, help='Start a new study where JSONL has one (old files are moved aside)')]):
        f = option(f)
    return f


def rate_options(f):
    """tools/label.py rate's options, after page_options'."""
    f = page_options(f)
    for option in reversed([
        click.option('--bank', 'bank_dirs', required=True, multiple=True, metavar='BANK', help='Sample bank (repeat '
            'for several: each sample\'s bank is hidden)'),
        click.option('--criteria', required=True, metavar='LIST', help="What to rate 1-5: 'geometry,detail,symmetry', "
            f'or a preset: {ratings.preset_help()}'),
        click.option('--out', required=True, metavar='JSONL', help='Ratings file; its key: JSONL.key.json'),
        click.option('--samples', type=click.IntRange(min=1), metavar='N', help='Samples each annotator rates  '
            '[default: all]'),
        click.option('--force', is_flag=True, help='Start anew where JSONL has ratings (old files are moved aside)')]):
        f = option(f)
    return f


def pair_options(f):
    """score-ratings' --tuned and --original: which bank's ratings are paired with which (analysis/paired_ratings.py)."""
    f = click.option('--original', metavar='BANK', help='The original bank, as given to rate --bank  [default: the '
        'other of two]')(f)
    return click.option('--tuned', metavar='BANK', help='The tuned bank, as given to rate --bank; its ratings minus '
        'the original\'s per id  [default: of two banks, the one whose folder is named *tuned*]')(f)


def need_annotator(annotator, host):
    if annotator is None and is_loopback(host):
        raise click.UsageError('--annotator NAME is needed (beyond loopback, with --host, names come from invites)')


def pair_target(target, samples):
    """serve's --pairs: as given, or DEFAULT_PAIRS, or every pair of a smaller bank; BadParameter for more than it has."""
    limit = samples * (samples - 1) // 2
    target = min(DEFAULT_PAIRS, limit) if target is None else target
    if target > limit:
        raise click.BadParameter(f'{target} pairs asked for, but {samples} samples give only {limit}', param_hint='--pairs')
    return target

#----------------------------------------------------------------------------

class Sessions:
    """Each annotator's session of one labels file, opened on first use by open_session(name) with the annotator's
    lock (labeling.lock_annotator) held until close(): two servers never label one file as one person. A file that
    cannot be resumed is a LabelError saying the fix; its tolerated leftovers are 'warning: ...' lines on stderr."""

    def __init__(self, path, open_session):
        self.path, self._open = path, open_session
        self._sessions, self._locks, self._lock = {}, [], threading.Lock()

    def open_session(self, annotator):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always', LabelWarning)
                return self._open(annotator)
        except (LabelError, OSError) as err:
            raise LabelError(f'{err} (fix the file, or choose another --out)') from None
        finally:
            for w in caught:
                print(f'warning: {w.message}', file=sys.stderr, flush=True)

    def get(self, annotator):
        with self._lock:
            if annotator not in self._sessions:
                loaded = labeling.file_size(self.path)
                session = self.open_session(annotator)              # Refuses a bad file before any write.
                self._locks.append(labeling.lock_annotator(self.path, annotator))
                if labeling.file_size(self.path) != loaded:         # Another server of NAME wrote before it let go.
                    session = self.open_session(annotator)
                self._sessions[annotator] = session
            return self._sessions[annotator]

    def opened(self):
        with self._lock:
            return dict(self._sessions)

    def close(self):
        for lock in self._locks:
            lock.close()


def serve_page(host, port, out, annotator, open_session, settings, bank=None, samples=None, page=PAGE_FILE,
        dry_run=False, noun='pairs judged', allow_hosts=()):
    """Serve a labeling page of labels file `out` until Ctrl-C, printing where; with dry_run print what it would serve.
    On loopback the page is `annotator`'s; beyond it, each invited annotator's (invites.py; `annotator`, if given,
    only names whose progress the console shows). open_session(name) -> a session (LabelSession, StudySession,
    RatingSession); settings(state of annotator's session, or None) -> the console's description; samples(token) ->
    (Bank, id) for opaque pages; allow_hosts: --allow-host's names. LabelError or OSError for a file that cannot be
    labelled or an address not bound."""
    labeling.check_appendable(out)
    remote = not is_loopback(host)
    sessions = Sessions(out, open_session)
    try:
        if dry_run:
            state = sessions.open_session(annotator).state() if annotator else None
            print(f'would serve http://{host}:{port}/: {settings(state)}')
            return
        state = sessions.get(annotator).state() if annotator else None
        invites = Invites(out) if remote else None
        try:
            server = LabelServer((host, port), bank, None if remote else sessions.get(annotator), samples=samples,
                sessions=sessions, invites=invites, page=page, allow_hosts=allow_hosts)
        except OSError as err:
            raise LabelError(f'cannot listen on {host}:{port}: {err.strerror or err}') from None
        if remote:
            print(f'warning: listening on {host}: other machines can reach this page; only invited annotators get in '
                f'({invites.reload()} invited in {invites.path}; python tools/label.py invite NAME --out {out} adds one)',
                flush=True)
        if host in WILDCARDS:
            print(f'answering Host names {", ".join(sorted(server.hosts))} (add others with --allow-host NAME)',
                flush=True)
        print(f'serving http://{host}:{server.server_address[1]}/: {settings(state)}; Ctrl-C stops', flush=True)
        server.run()
        for name, session in sessions.opened().items():
            state = session.state()
            print(f'{state["done"]}/{state["target"]} {noun} by {name} in {out}')
    finally:
        sessions.close()

#----------------------------------------------------------------------------
# The three pages.

def serve_pairs(bank, bank_dir, out, target, repeat_rate, annotator, port, host, seed, dry_run, rewards=None, order=None,
        allow_hosts=()):
    """tools/label.py serve: pairs of one bank, in seeded random order or (given reward scores) active order."""
    settings = lambda s: (f'bank {bank_dir} ({len(bank)} samples), out {out}, ' + (f'annotator {annotator}, '
        f'{s["done"]}/{target} judged' if s else f'invited annotators, {target} pairs each') + f', order '
        f'{order or f"random, seed {seed}"}, repeat rate {repeat_rate}')
    serve_page(host, port, out, annotator, lambda name: labeling.open_session(out, name, bank.ids, target,
        repeat_rate=repeat_rate, seed=seed, scores=rewards), settings, bank=bank, dry_run=dry_run, allow_hosts=allow_hosts)


def open_banks(*folders):
    try:
        return [Bank(folder) for folder in folders]
    except BankError as err:
        raise LabelError(str(err)) from None


def serve_study(out, original_dir, tuned_dir, pairs, repeat_rate, attention_rate, force, annotator, port, host, seed,
        dry_run, allow_hosts=()):
    """tools/label.py study: open (or make) the study of `out` (blind_study.open_study) and serve its page."""
    need_annotator(annotator, host)
    labeling.check_appendable(out)
    original, tuned = open_banks(original_dir, tuned_dir)
    study = blind_study.open_study(out, original, tuned, pairs, attention_rate, seed, force=force, dry_run=dry_run,
        address=(host, port))
    if study is None:
        print(f'would start a new study of {pairs or len(original)} pairs of {original_dir} and {tuned_dir} in {out} and '
            f'serve http://{host}:{port}/')
        return
    settings = lambda s: (f'study {out} ({len(study.pairs)} pairs, {len(study.checks)} attention checks), ' + (
        f'annotator {annotator}, {s["done"]}/{s["target"]} judged, ' if s else '') + f'repeat rate {repeat_rate}')
    serve_page(host, port, out, annotator, lambda name: blind_study.StudySession(out, name, study, repeat_rate,
        study.key['seed']), settings, samples=study.sample_of, dry_run=dry_run, allow_hosts=allow_hosts)


def serve_ratings(out, bank_dirs, criteria, samples, force, annotator, port, host, seed, dry_run, allow_hosts=()):
    """tools/label.py rate: open (or make) the ratings key of `out` (ratings.open_ratings) and serve its page."""
    need_annotator(annotator, host)
    labeling.check_appendable(out)
    names = ratings.parse_criteria(criteria)
    banks = list(zip(bank_dirs, open_banks(*bank_dirs)))
    key = ratings.open_ratings(out, banks, names, seed, force=force, dry_run=dry_run, address=(host, port))
    if key is None:
        print(f'would rate {sum(len(b) for _, b in banks)} samples on {", ".join(names)} into {out} and serve '
            f'http://{host}:{port}/')
        return
    settings = lambda s: f'ratings {out} ({len(key.samples)} samples, {", ".join(key.criteria)})' + (
        f', annotator {annotator}, {s["done"]}/{s["target"]} rated' if s else '')
    serve_page(host, port, out, annotator, lambda name: ratings.RatingSession(out, name, key, samples), settings,
        samples=key.sample_of, page=RATE_PAGE_FILE, dry_run=dry_run, noun='samples rated', allow_hosts=allow_hosts)

#----------------------------------------------------------------------------
