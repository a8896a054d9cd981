"""Blind same-seed studies, ratings and invited annotators: data.blind_study, data.ratings, data.invites,
analysis.study and tools/label.py study, score-study, rate, score-ratings and invite."""

import json
import math
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from eg3d_rlhf.analysis import study as S
from eg3d_rlhf.data import blind_study as BS
from eg3d_rlhf.data import invites as I
from eg3d_rlhf.data import labeling as L
from eg3d_rlhf.data import ratings as R
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.label_pages import Sessions
from eg3d_rlhf.data.label_server import RATE_PAGE_FILE
from eg3d_rlhf.data.preferences import Judgement, now
from tests.conftest import REPO
from tests.helpers.browser import chromium_driver
from tests.helpers.cli import tool
from tests.helpers.label import fake_bank, ok, read_lines
from tests.helpers.study import (Recorded, call, fetch, file_hash, judgement, nose_bank, picture_index, smaller_nose,
    start_page)
from tools import label

#----------------------------------------------------------------------------
# Two banks of ten faces: the tuned nose is smaller for seven ids and larger for three, so an annotator who always
# prefers the smaller nose prefers tuned in 7 of 10 pairs.

IDS = [f'seed{i:06d}' for i in range(10)]
ORIGINAL = dict(zip(IDS, np.linspace(0.030, 0.066, 10)))
TUNED = {x: ORIGINAL[x] - 0.0015 if i < 7 else ORIGINAL[x] + 0.0025 for i, x in enumerate(IDS)}


@pytest.fixture(scope='module')
def nose_banks(tmp_path_factory):
    root = tmp_path_factory.mktemp('noses')
    original = nose_bank(root / 'bankOrigQ7', ORIGINAL)
    tuned = nose_bank(root / 'bankTunedQ7', TUNED)
    noses = {**{(original, x): n for x, n in ORIGINAL.items()}, **{(tuned, x): n for x, n in TUNED.items()}}
    return original, tuned, noses, picture_index([original, tuned])


run = tool(label.main)

#----------------------------------------------------------------------------
# Statistics.

def test_fleiss_kappa_of_the_textbook_example():
    # Fleiss (1971)'s worked example as Wikipedia gives it: 10 items, 14 raters, 5 categories; kappa 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1], [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert S.fleiss_kappa(table) == pytest.approx(0.2099, abs=5e-4)
    assert S.fleiss_kappa([[2, 0], [2, 0]]) is None                     # One category only: undefined.
    assert S.fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)


def test_mean_interval_by_hand():
    m = S.mean_interval([1, 2, 3, 4, 5])
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)                   # t(0.975, 4) * sd / sqrt(n).
    assert m['n'] == 5 and m['mean'] == 3 and m['sd'] == pytest.approx(math.sqrt(2.5))
    assert m['ci95'] == pytest.approx([3 - half, 3 + half], abs=1e-6)


def test_score_study_by_hand(nose_banks, tmp_path):
    original, tuned, _, _ = nose_banks
    study = BS.make_study(str(tmp_path / 's.jsonl'), Bank(original), Bank(tuned), IDS[:6], attention=2)
    alice = ['tuned', 'tuned', 'tuned', 'original', 'tie', 'skip']
    bob = ['tuned', 'original', 'tuned', 'original', 'tuned', 'tuned']
    js = [judgement(study, 'alice', x, w) for x, w in zip(IDS, alice)]
    js += [judgement(study, 'bob', x, w) for x, w in zip(IDS, bob)]
    js += [judgement(study, 'alice', IDS[0], 'tuned', repeat=True, swap=True),       # Agrees with itself ...
           judgement(study, 'alice', IDS[3], 'tuned', repeat=True, swap=True)]       # ... and does not.
    (a1, b1), (a2, b2) = study.checks
    clean1, clean2 = study.clean[L.pair_key(a1, b1)], study.clean[L.pair_key(a2, b2)]
    js += [Judgement(a=a1, b=b1, choice='a' if a1 == clean1 else 'b', annotator='alice', time=now()),
           Judgement(a=a2, b=b2, choice='a' if a2 == clean2 else 'b', annotator='alice', time=now()),
           Judgement(a=a1, b=b1, choice='a' if a1 != clean1 else 'b', annotator='bob', time=now())]
    r = S.score_study(js, study, min_attention=0.8)
    a, b = r['annotators']['alice'], r['annotators']['bob']
    assert (a['wins'], a['losses'], a['ties'], a['skips']) == (3, 1, 1, 1) and a['win_rate'] == 0.75
    assert a['binomial_p'] == pytest.approx(0.625)                      # P(|X - 2| >= 1), X ~ B(4, 1/2): 10/16.
    assert a['cohens_h'] == pytest.approx(2 * math.asin(math.sqrt(0.75)) - math.pi / 2)
    assert (b['wins'], b['losses']) == (4, 2) and b['win_rate'] == pytest.approx(4 / 6)
    assert a['self_consistency'] == dict(pairs=2, agreed=1, rate=0.5)
    assert a['attention'] == dict(shown=2, passed=2, rate=1.0, flagged=False)
    assert b['attention'] == dict(shown=1, passed=0, rate=0.0, flagged=True) and r['flagged'] == ['bob']
    pooled = r['pooled']
    assert (pooled['wins'], pooled['losses'], pooled['ties']) == (7, 3, 1)
    assert (r['pooled_without_flagged']['wins'], r['pooled_without_flagged']['losses']) == (3, 1)
    # Shared pairs decided or tied by both: ids 0-4; alice T T T O tie, bob T O T O T: 3 of 5 agree.
    # p_o = 3/5; alice's shares T 3/5, O 1/5, tie 1/5; bob's T 3/5, O 2/5: p_e = 9/25 + 2/25 = 11/25.
    pair = r['agreement']['pairs'][0]
    assert (pair['shared'], pair['agreed']) == (5, 3)
    assert pair['kappa'] == pytest.approx((3 / 5 - 11 / 25) / (1 - 11 / 25))
    fleiss = r['agreement']['fleiss']
    # Per item (T, O, tie): [2,0,0], [1,1,0], [2,0,0], [0,2,0], [1,0,1]; P_i = 1, 0, 1, 1, 0; P_bar 3/5.
    # Shares: T 6/10, O 3/10, tie 1/10: P_e = 0.46.
    assert fleiss['items'] == 5 and fleiss['kappa'] == pytest.approx((0.6 - 0.46) / (1 - 0.46))
    lines = S.describe_study(r)
    assert any('FLAGGED' in line and line.startswith('bob') for line in lines)

#----------------------------------------------------------------------------
# The key.


def test_study_outcomes_are_the_standing_choices_score_study_counts(nose_banks, tmp_path):
    original, tuned, _, _ = nose_banks
    study = BS.make_study(str(tmp_path / 's.jsonl'), Bank(original), Bank(tuned), IDS[:4], attention=1)
    js = [judgement(study, 'alice', IDS[0], 'original'), judgement(study, 'alice', IDS[0], 'tuned', swap=True),
          judgement(study, 'alice', IDS[1], 'tie'), judgement(study, 'alice', IDS[2], 'skip'),
          judgement(study, 'alice', IDS[1], 'original', repeat=True), judgement(study, 'bob', IDS[0], 'original')]
    (a, b), = study.checks
    js.append(Judgement(a=a, b=b, choice='a', annotator='alice', time=now()))
    outcomes = S.study_outcomes(js, study)
    assert sorted(outcomes) == [('alice', IDS[0], 'tuned'), ('alice', IDS[1], 'tie'), ('bob', IDS[0], 'original')]
    pooled = S.score_study(js, study)['pooled']
    assert (pooled['wins'], pooled['losses'], pooled['ties']) == (1, 1, 1)

def test_sides_are_drawn_per_pair_and_a_study_is_never_replaced_without_force(tmp_path):
    original, tuned = Bank(fake_bank(tmp_path / 'o', count=60)), Bank(fake_bank(tmp_path / 't', count=60))
    out = str(tmp_path / 's.jsonl')
    study = BS.open_study(out, original, tuned)
    lefts = [study.role(a) for a, _ in study.pairs]
    assert len(study.pairs) == 60 and 0 < lefts.count('tuned') < 60      # Both sides appear on the left.
    assert len(set(study.samples)) == 120 and all(re.fullmatch(r'[0-9a-f]{16}', t) for t in study.samples)
    key = open(BS.key_path(out)).read()
    assert BS.open_study(out, original, tuned).key == study.key and open(BS.key_path(out)).read() == key
    with pytest.raises(BS.LabelError, match='made with pairs 60, not 10'):
        BS.open_study(out, original, tuned, pairs=10)
    with pytest.raises(BS.LabelError, match='compares --tuned'):
        BS.open_study(out, original, Bank(fake_bank(tmp_path / 'x', count=60)))
    served = re.escape(f'{out} is being served by another process (pid {os.getpid()}); stop it first')
    with pytest.raises(BS.LabelError, match=served):
        BS.open_study(out, original, tuned, pairs=10, force=True)     # While `study` is open, it is served.
    study.close()
    again = BS.open_study(out, original, tuned, pairs=10, force=True)
    assert len(again.pairs) == 10 and [p for p in os.listdir(tmp_path) if 'replaced' in p]
    assert json.load(open([str(tmp_path / p) for p in os.listdir(tmp_path) if p.startswith('s.jsonl.key.json.replaced')][0])) \
        == study.key                                                    # Moved aside, not lost.


def test_study_refuses_banks_that_do_not_pair(nose_banks, tmp_path):
    original, tuned, _, _ = nose_banks
    other = nose_bank(tmp_path / 'fewer', {x: 0.04 for x in IDS[:9]})
    result = run('study', '--original', original, '--tuned', other, '--out', tmp_path / 's.jsonl', '--annotator', 'a',
        '--dry-run')
    assert result.exit_code == 1 and 'fewer: has no sample seed000009' in result.output and len(result.output.splitlines()) == 1
    from tests.helpers.banks import write_bank
    from eg3d_rlhf.geometry.sigma import slab_grid
    coarse = write_bank(tmp_path / 'coarse', {x: np.zeros(slab_grid(32).shape, np.float32) for x in IDS}, 32)
    result = run('study', '--original', original, '--tuned', coarse, '--out', tmp_path / 's.jsonl', '--annotator', 'a')
    assert result.exit_code == 1 and 'coarse/seed000000/meta.json: slab grid' in result.output
    result = run('study', '--original', original, '--tuned', original, '--out', tmp_path / 's.jsonl', '--annotator', 'a')
    assert result.exit_code == 1 and 'the same bank as --original' in result.output
    result = run('study', '--original', original, '--tuned', tuned, '--out', tmp_path / 's.jsonl', '--dry-run')
    assert result.exit_code == 2 and '--annotator NAME is needed' in result.output
    result = ok(run('study', '--original', original, '--tuned', tuned, '--out', tmp_path / 's.jsonl', '--annotator', 'a',
        '--attention-rate', '0.2', '--dry-run'))
    assert result.output.startswith('would start a new study of 10 pairs')
    assert not os.path.exists(tmp_path / 's.jsonl.key.json')            # A dry run writes nothing.


def test_attention_copies_show_floaters(nose_banks, tmp_path):
    original, tuned, _, index = nose_banks
    study = BS.make_study(str(tmp_path / 's.jsonl'), Bank(original), Bank(tuned), IDS, attention=3)
    for a, b in study.checks:
        clean = study.clean[L.pair_key(a, b)]
        flawed = b if clean == a else a
        bank, sample_id = study.sample_of(flawed)
        slab, source = bank.slab(sample_id), study.sample_of(clean)
        added = (slab >= 10) & ~(source[0].slab(source[1]) >= 10)
        assert added.sum() > 0                                          # Floaters above the level where it was empty ...
        front = open(bank.path(sample_id, 'preview_front.png'), 'rb').read()
        assert front != open(source[0].path(source[1], 'preview_front.png'), 'rb').read()   # ... that the front view shows.

#----------------------------------------------------------------------------
# The study through the page.

NAMES = ('bankOrigQ7', 'bankTunedQ7', 'key.json', 'seed0000')     # Found nowhere the page, its API or its files reach.
ROLE_WORDS = ('original', 'tuned', 'attention', 'check0')            # Found in no URL and no API answer.


def text_answers(answers):
    """(path, text) of each recorded answer: the body too when it is text (HTML, JSON, JavaScript)."""
    return [(p, b.decode('utf-8') if t.startswith(('text/', 'application/json')) else '') for p, t, b in answers]


@pytest.mark.slow
def test_a_study_through_the_page_in_chromium(nose_banks, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait
    original, tuned, noses, index = nose_banks
    out = str(tmp_path / 'study.jsonl')
    study = BS.open_study(out, Bank(original), Bank(tuned), attention_rate=0.2)
    session = BS.StudySession(out, 'carol', study, repeat_rate=0.3, seed=0)
    driver = chromium_driver()
    try:
        with Recorded(session, study.sample_of) as s:
            driver.get(s.url + '/')
            wait = WebDriverWait(driver, 10)
            wait.until(lambda d: d.find_element('id', 'status').text == 'ready')
            body, saved, sources = driver.find_element('tag name', 'body'), 0, []
            while 'finished' not in body.get_attribute('class'):
                urls = [driver.find_element('css selector', f'#{side} .views img').get_attribute('src') for side in ('left', 'right')]
                sources += urls
                assert all(driver.find_element('css selector', f'#{side} .id').text == '' for side in ('left', 'right'))
                body.send_keys('1' if smaller_nose(*urls, index, noses) == 'a' else '2')
                saved += 1
                wait.until(lambda d: d.find_element('tag name', 'body').get_attribute('data-saved') == str(saved))
            page = driver.page_source
        answers = s.answers
    finally:
        driver.quit()
    records = read_lines(out)
    repeats = sum(bool(r.get('repeat')) for r in records)
    assert len(records) == saved == 10 + 2 + repeats and repeats >= 1
    # Blind: the page, every API answer and every URL served name no bank, role, key or id.
    names = NAMES + (original, tuned, os.path.realpath(original), os.path.realpath(tuned), BS.key_path(out))
    answered = text_answers(answers)
    for text in [page, *sources] + [p + body for p, body in answered]:
        assert not any(x in text for x in names), [x for x in names if x in text]
    for text in sources + [p + body for p, body in answered if p.startswith('/api/') or not body]:
        assert not any(x in text for x in ROLE_WORDS), [x for x in ROLE_WORDS if x in text]
    assert any(p == '/api/state' for p, _ in answered) and len(answered) > 30
    assert all(re.fullmatch(r'/(|api/\w+|mesh_viewer\.js|favicon\.ico|bank/[0-9a-f]{16}/[a-z_]+\.(png|bin))', p) for p, _ in answered)
    # Unblinded: 7 of 10 pairs prefer tuned, every repeat agrees, both attention checks pass.
    result = ok(run('score-study', '--out', out))
    assert 'carol: tuned preferred in 7/10 decided pairs (70.0%' in result.output
    score = json.load(open(out + '.score.json'))['annotators']['carol']
    assert (score['wins'], score['losses'], score['win_rate']) == (7, 3, 0.7)
    assert score['self_consistency']['rate'] == 1.0 and score['attention'] == dict(shown=2, passed=2, rate=1.0, flagged=False)
    assert score['binomial_p'] == pytest.approx(0.34375)                # P(|X - 5| >= 2), X ~ B(10, 1/2): 352/1024.
    assert os.path.isfile(out + '.score.html')


@pytest.mark.slow
def test_kill_9_mid_study_loses_nothing_and_resumes(nose_banks, tmp_path):
    original, tuned, noses, index = nose_banks
    out = str(tmp_path / 'study.jsonl')
    args = ['--original', original, '--tuned', tuned, '--out', out, '--annotator', 'dave', '--repeat-rate', '0',
        '--attention-rate', '0.1']

    def judge_some(port, count):
        sent = []
        state = call(port, 'GET', '/api/state')[1]
        for _ in range(count):
            a, b = state['current']['a'], state['current']['b']
            choice = smaller_nose(f'http://127.0.0.1:{port}/bank/{a}/preview_front.png',
                f'http://127.0.0.1:{port}/bank/{b}/preview_front.png', index, noses)
            status, data, _ = call(port, 'POST', '/api/judge', dict(a=a, b=b, choice=choice))
            assert status == 200
            sent.append((a, b, choice))
            state = data['state']
        return sent, state

    proc, port = start_page('study', *args)
    try:
        sent, _ = judge_some(port, 6)                                   # The page said saved six times; kill at once.
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    key = open(BS.key_path(out)).read()
    assert [(r['a'], r['b'], r['choice']) for r in read_lines(out)] == sent
    proc, port = start_page('study', *args)
    try:
        state = call(port, 'GET', '/api/state')[1]
        assert state['done'] == 6 and state['target'] == 11 and state['blind'] is True
        more, state = judge_some(port, 5)
        assert state['current'] is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert open(BS.key_path(out)).read() == key                         # The same key after the restart.
    records = read_lines(out)
    assert [(r['a'], r['b'], r['choice']) for r in records] == sent + more
    assert len({L.pair_key(r['a'], r['b']) for r in records}) == 11
    result = ok(run('score-study', '--out', out))
    assert 'dave: tuned preferred in 7/10 decided pairs (70.0%' in result.output and 'attention 1/1' in result.output

#----------------------------------------------------------------------------
# Ratings.

CRITERIA = ['geometry', 'detail', 'symmetry']


def scripted_ratings(sample, noses):
    """What the scripted rater gives a sample: from its nose radius, three numbers 1-5."""
    n = noses[sample]
    return dict(geometry=1 + int(n * 1000) % 5, detail=5 - int(n * 700) % 5, symmetry=3 if n < 0.045 else 4)


@pytest.mark.slow
def test_ratings_through_the_page_and_their_summary(nose_banks, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    original, tuned, noses, index = nose_banks
    small_o = nose_bank(tmp_path / 'rateO', {x: ORIGINAL[x] for x in IDS[:5]})
    small_t = nose_bank(tmp_path / 'rateT', {x: TUNED[x] for x in IDS[:5]})
    noses = {**{(small_o, x): ORIGINAL[x] for x in IDS[:5]}, **{(small_t, x): TUNED[x] for x in IDS[:5]}}
    index = picture_index([small_o, small_t])
    out = str(tmp_path / 'ratings.jsonl')
    key = R.open_ratings(out, [('rateO', Bank(small_o)), ('rateT', Bank(small_t))], CRITERIA)
    session = R.RatingSession(out, 'erin', key)
    driver = chromium_driver()
    given = {}
    try:
        with Recorded(session, key.sample_of, page=RATE_PAGE_FILE) as s:
            driver.get(s.url + '/')
            wait = WebDriverWait(driver, 10)
            wait.until(lambda d: d.find_element('id', 'status').text == 'ready')
            body, saved = driver.find_element('tag name', 'body'), 0
            while 'finished' not in body.get_attribute('class'):
                url = driver.find_element('css selector', '#sample .views img').get_attribute('src')
                sample = index[file_hash(fetch(url))]
                values = scripted_ratings(sample, noses)
                if saved == 2:                                          # A slip, taken back with Backspace.
                    body.send_keys('1')
                    body.send_keys(Keys.BACKSPACE)
                for c in CRITERIA:
                    body.send_keys(str(values[c]))
                saved += 1
                wait.until(lambda d: d.find_element('tag name', 'body').get_attribute('data-saved') == str(saved))
                given[sample] = values
            texts = [driver.page_source] + [p + body for p, body in text_answers(s.answers)]
    finally:
        driver.quit()
    assert saved == 10 and len(given) == 10
    assert not any(x in t for t in texts for x in ('rateO', 'rateT', 'seed0000'))
    records = read_lines(out)
    assert [r['ratings'] for r in records] == [given[(small_o if key.samples[r['sample']][0] == 'rateO' else small_t,
        key.samples[r['sample']][1])] for r in records]
    result = ok(run('score-ratings', '--out', out))
    summary = json.load(open(out + '.score.json'))
    t4 = 2.7764451                                                      # t(0.975, 4): five samples per bank.
    for c in CRITERIA:
        for label_, folder in (('rateO', small_o), ('rateT', small_t)):
            x = [given[(folder, i)][c] for i in IDS[:5]]
            mean = sum(x) / 5
            sd = math.sqrt(sum((v - mean) ** 2 for v in x) / 4)
            got = summary['criteria'][c]['banks'][label_]
            assert got['n'] == 5 and got['mean'] == pytest.approx(mean)
            if sd > 0:
                assert got['ci95'] == pytest.approx([mean - t4 * sd / math.sqrt(5), mean + t4 * sd / math.sqrt(5)])
            else:
                assert got['ci95'] == pytest.approx([mean, mean])
        assert summary['criteria'][c]['all']['n'] == 10
    assert 'geometry     rateO: mean' in result.output


def test_ratings_refuse_bad_records_and_other_criteria(tmp_path):
    out = str(tmp_path / 'r.jsonl')
    key = R.open_ratings(out, [('b', Bank(fake_bank(tmp_path / 'b', count=3)))], ['geometry', 'detail'])
    s = R.RatingSession(out, 'x', key)
    cur = s.state()['current']['sample']
    for bad in (dict(geometry=6, detail=1), dict(geometry=2), dict(geometry=2.0, detail=1), dict(geometry=2, detail=1, x=3)):
        with pytest.raises(ValueError, match='rate each of geometry, detail'):
            s.rate(cur, bad)
    with pytest.raises(ValueError, match='is not the sample being shown'):
        s.rate('0' * 16, dict(geometry=2, detail=1))
    s.rate(cur, dict(geometry=2, detail=5))
    s.undo()
    assert s.state()['current']['sample'] == cur and R.load_ratings(out, key) == []
    with pytest.raises(R.LabelError, match='made for banks'):
        R.open_ratings(out, [('b', Bank(str(tmp_path / 'b')))], ['geometry'])
    with pytest.raises(R.LabelError, match='criterion'):
        R.parse_criteria('geometry,,detail')
    with open(out, 'a') as f:
        f.write(json.dumps(dict(sample=cur, ratings=dict(geometry=9, detail=1), annotator='x', time=now(), id='z')) + '\n')
    result = run('score-ratings', '--out', out)
    assert result.exit_code == 1 and 'r.jsonl:3: "ratings" must rate each criterion' in result.output

#----------------------------------------------------------------------------
# Invited annotators.

def test_invite_prints_a_link_and_keeps_only_its_hash(tmp_path):
    out = tmp_path / 'l.jsonl'
    result = ok(run('invite', 'alice', '--out', out, '--url', 'http://box:9000/'))
    token = re.fullmatch(r'http://box:9000/\?token=([A-Za-z0-9_-]+)\n', result.output).group(1)
    stored = open(I.invites_path(str(out))).read()
    assert token not in stored and I.digest(token) in stored
    result = run('invite', 'alice', '--out', out)
    assert result.exit_code == 1 and 'alice is invited already' in result.output and open(I.invites_path(str(out))).read() == stored
    assert I.Invites(str(out)).name_of(token) == 'alice'
    ok(run('invite', 'alice', '--out', out, '--force'))
    assert I.Invites(str(out)).name_of(token) is None                   # Replaced: the old link stops working.


def test_beyond_loopback_every_request_needs_a_token_and_its_own_origin(tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank', count=6)
    out = str(tmp_path / 'l.jsonl')
    tokens = {name: I.invite(out, name) for name in ('alice', 'bob')}
    bank = Bank(bank_dir)
    sessions = Sessions(out, lambda name: L.open_session(out, name, bank.ids, 5))
    server = Recorded(None, lambda t: (bank, t) if t in bank else None, host='0.0.0.0', sessions=sessions,
        invites=I.Invites(out))
    try:
        port, own = server.port, f'http://127.0.0.1:{server.port}'
        for path in ('/', '/api/state', '/bank/seed000001/image.png', f'/api/state?token={"x" * 32}'):
            status, data, _ = call(port, 'GET', path)
            assert status == 403 and b'Which shape' not in json.dumps(data).encode(), path
        for headers in ({}, {'Origin': own}, {'Cookie': f'label_token_{port}=nonsense', 'Origin': own}):
            assert call(port, 'POST', '/api/undo', {}, headers)[0] == 403
        status, data, _ = call(port, 'POST', f'/api/judge?token={tokens["alice"]}', dict(a='seed000001', b='seed000002',
            choice='a'), {'Origin': 'http://evil.example'})
        assert status == 403 and 'nothing was written' in data['error']
        status, data, _ = call(port, 'POST', f'/api/undo?token={tokens["alice"]}', {})   # No Origin at all.
        assert status == 403
        assert not os.path.exists(out)                                  # Nothing written by any refused request.
        # The link sets a cookie; the page's later requests carry it. Names come from tokens, whatever is claimed.
        status, page, response = call(port, 'GET', f'/?token={tokens["alice"]}&annotator=bob')
        assert status == 200 and b'Which shape' in page
        cookie = response.getheader('Set-Cookie').split(';')[0]
        assert cookie == f'label_token_{port}={tokens["alice"]}' and 'HttpOnly' in response.getheader('Set-Cookie')
        for name, headers in (('alice', {'Cookie': cookie}), ('bob', {'Cookie': f'label_token_{port}={tokens["bob"]}'})):
            state = call(port, 'GET', '/api/state?annotator=mallory', headers=dict(headers, **{'X-Annotator': 'mallory'}))[1]
            assert state['annotator'] == name
            assert call(port, 'GET', f'/bank/{state["current"]["a"]}/image.png', headers=headers)[0] == 200
            cur = state['current']
            status, data, _ = call(port, 'POST', '/api/judge', dict(a=cur['a'], b=cur['b'], choice='a'),
                dict(headers, Origin=own))
            assert status == 200 and data['state']['annotator'] == name
    finally:
        server.__exit__()
        sessions.close()
    assert sorted(r['annotator'] for r in read_lines(out)) == ['alice', 'bob']


@pytest.mark.slow
def test_serve_beyond_loopback_takes_invites_in_a_process(tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank', count=5)
    out = str(tmp_path / 'l.jsonl')
    token = I.invite(out, 'frank')
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'tools', 'label.py'), 'serve', '--port', '0', '--bank',
        bank_dir, '--out', out, '--host', '0.0.0.0'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if 'serving' in line:
                break
        port = int(re.search(r'serving http://0\.0\.0\.0:(\d+)/', lines[-1]).group(1))
        assert '1 invited in' in ''.join(lines) and 'invited annotators, 10 pairs each' in lines[-1]
        assert call(port, 'GET', '/api/state')[0] == 403
        assert call(port, 'GET', f'/api/state?token={token}')[1]['annotator'] == 'frank'
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

#----------------------------------------------------------------------------
