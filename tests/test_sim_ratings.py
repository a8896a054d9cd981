"""The five-criterion ratings study (paper5): the preset, simulated raters playing the page over HTTP
(analysis/sim_raters.py, tools/play_ratings.py), score-ratings' paired differences (analysis/paired_ratings.py), and
the raters' mean ratings of two banks' held-out samples (tools/rated_change.py)."""

import json
import math
import os
import shutil
import signal

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner

from eg3d_rlhf.analysis import paired_ratings as P
from eg3d_rlhf.analysis import sim_raters as S
from eg3d_rlhf.data import ratings as R
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.blind_study import add_floaters
from eg3d_rlhf.data.label_server import RATE_PAGE_FILE
from eg3d_rlhf.synthetic.family import Family
from tests.helpers.browser import chromium_driver
from tests.helpers.cli import refused_in_one_line
from tests.helpers.head_banks import drawn_heads, head_bank
from tests.helpers.label import fake_bank, ok
from tests.helpers.study import Recorded, call, run_label, start_page
from tools import play_ratings, rated_change

#----------------------------------------------------------------------------
# Two banks of the same eight heads: the original's with floaters (blind_study.add_floaters, as attention checks
# have), the tuned clean, so the tuned bank is better in surface quality and alike in the rest.

FAMILY = Family(seed=0, build_spread=0.15, heads=12)    # Fewer training heads than the tool's 64: a quicker reference.
FAMILY_ARGS = ['--family-seed', 0, '--build-spread', 0.15, '--family-heads', 12]


@pytest.fixture(scope='module')
def banks(tmp_path_factory):
    root = tmp_path_factory.mktemp('paper5')
    heads = drawn_heads(8)
    rng = np.random.default_rng(0)
    flawed = {x: (add_floaters(v, 10.0, rng), c) for x, (v, c) in heads.items()}
    return head_bank(root / 'bank-original', flawed), head_bank(root / 'bank-tuned', heads)


def play_one(port, banks, annotator_seed, via_tool):
    """One simulated rater over the page at port: through tools/play_ratings.py or the library."""
    url = f'http://127.0.0.1:{port}/'
    if via_tool:
        args = ['--url', url, '--bank', banks[0], '--bank', banks[1], '--seed', annotator_seed, *FAMILY_ARGS]
        ok(CliRunner().invoke(play_ratings.main, [str(a) for a in args]))
        return None
    return S.play(S.Page(url), S.SeenSamples(banks, FAMILY), S.Rater(annotator_seed))


@pytest.fixture(scope='module')
def played(banks, tmp_path_factory):
    """The study played end to end: tools/label.py rate --criteria paper5 served twice (sim-1, then sim-2), each time
    rated by a simulated rater over HTTP, then score-ratings; (out, the first state served, console output)."""
    out = str(tmp_path_factory.mktemp('played') / 'ratings.jsonl')
    first = None
    for annotator, seed, via_tool in (('sim-1', 1, True), ('sim-2', 2, False)):
        proc, port = start_page('rate', '--bank', banks[0], '--bank', banks[1], '--criteria', 'paper5', '--out', out,
            '--annotator', annotator)
        try:
            first = first or call(port, 'GET', '/api/state')[1]
            play_one(port, banks, seed, via_tool)
            assert call(port, 'GET', '/api/state')[1]['current'] is None
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
    result = ok(run_label('score-ratings', '--out', out))          # The tuned bank named by its folder's name.
    return out, first, result.output


@pytest.mark.slow
def test_the_study_through_the_page_scores_all_five_criteria_and_their_paired_differences(played, banks):
    out, first, output = played
    names = list(R.PRESETS['paper5'])
    assert first['criteria'] == names and set(first['descriptions']) == set(names)
    shown = first['current']
    assert isinstance(shown['condition'], int) and shown['conditions'] == 8
    assert 'bank-' not in json.dumps(first) and 'seed0' not in json.dumps(first)      # Nothing names the bank or id.
    summary = json.load(open(out + '.score.json'))
    assert summary['annotators'] == {'sim-1': dict(rated=16, skipped=0), 'sim-2': dict(rated=16, skipped=0)}
    paired = summary['paired']
    assert (paired['tuned'], paired['original'], paired['ids']) == (banks[1], banks[0], 8)
    for rows in [paired['pooled'], *paired['annotators'].values()]:
        assert list(rows) == names
        for s in rows.values():
            assert s['n'] == 8 and s['tuned_higher'] + s['tuned_lower'] + s['equal'] == pytest.approx(1)
            assert 0 <= s['wilcoxon_p'] <= s['holm_p'] <= 1
    assert sorted(paired['annotators']) == ['sim-1', 'sim-2']
    for c in names:
        assert c in summary['criteria'] and summary['criteria'][c]['all']['n'] == 32
    assert 'sim-2: surface_quality' in output and 'pooled: overall' in output
    assert 'Paired differences: tuned' in open(out + '.score.html').read()


@pytest.mark.slow
def test_the_tuned_bank_built_better_in_surface_quality_is_rated_higher_there(played):
    out, _, _ = played
    pooled = json.load(open(out + '.score.json'))['paired']['pooled']
    surface = pooled['surface_quality']
    assert surface['mean'] > 1 and surface['ci95'][0] > 0 and surface['tuned_higher'] >= 0.75
    assert surface['holm_p'] < 0.05                                     # 8 of 8 higher: exact p 1/128, Holm x5.
    assert surface['mean'] > abs(pooled['condition_consistency']['mean'])
    labels = sorted(R.RatingKey.load(R.key_path(out)).key['banks'])
    try:
        result = ok(run_label('score-ratings', '--out', out, '--tuned', labels[0]))        # bank-original as "tuned".
        again = json.load(open(out + '.score.json'))['paired']['pooled']['surface_quality']
    finally:
        ok(run_label('score-ratings', '--out', out))                                    # The report as it was.
    assert f'tuned ({labels[0]})' in result.output and again['mean'] == pytest.approx(-surface['mean'])

@pytest.mark.slow
def test_the_page_shows_the_condition_and_the_questions_in_a_browser(banks, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait
    out = str(tmp_path / 'r.jsonl')
    key = R.open_ratings(out, [(b, Bank(b)) for b in banks], list(S.CRITERIA))
    session = R.RatingSession(out, 'erin', key)
    driver = chromium_driver()
    try:
        with Recorded(session, key.sample_of, page=RATE_PAGE_FILE) as server:
            driver.get(server.url + '/')
            WebDriverWait(driver, 10).until(lambda d: d.find_element('id', 'status').text == 'ready')
            condition = session.state()['current']['condition']
            assert driver.find_element('id', 'condition').text == f'Drawn for condition {condition} (of 0\u20137)'
            rows = driver.find_elements('css selector', '.criterion')
            assert [r.get_attribute('data-criterion') for r in rows] == list(S.CRITERIA)
            assert 'no dents, holes, floaters' in rows[3].text
            driver.find_element('tag name', 'body').send_keys('43215')
            WebDriverWait(driver, 10).until(lambda d: d.find_element('tag name', 'body').get_attribute('data-saved') == '1')
    finally:
        driver.quit()
    assert R.load_ratings(out, key)[0]['ratings'] == dict(zip(S.CRITERIA, (4, 3, 2, 1, 5)))
    key.close()

#----------------------------------------------------------------------------
# The statistics by hand.

def test_paired_summary_and_holm_by_hand():
    d = [2, 1, 0, 1, -1, 2, 1]
    s = P.paired_summary(d)
    mean, sd = np.mean(d), np.std(d, ddof=1)
    half = scipy.stats.t.ppf(0.975, 6) * sd / math.sqrt(7)
    assert s['n'] == 7 and s['mean'] == pytest.approx(mean) and s['ci95'] == pytest.approx([mean - half, mean + half])
    assert s['wilcoxon_p'] == pytest.approx(scipy.stats.wilcoxon(d).pvalue)
    assert (s['tuned_higher'], s['tuned_lower'], s['equal']) == pytest.approx((5 / 7, 1 / 7, 1 / 7))
    assert P.paired_summary([0, 0, 0])['wilcoxon_p'] == 1.0
    rows = P.holm({c: dict(n=5, wilcoxon_p=p) for c, p in zip('abc', (0.01, 0.04, 0.03))})
    assert [rows[c]['holm_p'] for c in 'abc'] == pytest.approx([0.03, 0.06, 0.06])   # 3p, then max(2p, earlier).


def test_paired_differences_average_annotators_per_id(tmp_path):
    banks = [fake_bank(tmp_path / 'bank-original', count=3), fake_bank(tmp_path / 'bank-tuned', count=3)]
    out = str(tmp_path / 'r.jsonl')
    key = R.open_ratings(out, [(b, Bank(b)) for b in banks], ['detail', 'overall'])
    token = {(label, x): t for t, (label, x) in key.samples.items()}
    given = {('a', 'seed000000'): (5, 3), ('b', 'seed000000'): (3, 3), ('a', 'seed000001'): (2, 4)}
    records = [dict(sample=token[(banks[k], x)], annotator=name, ratings=dict(detail=pair[k], overall=3))
        for (name, x), pair in given.items() for k in (0, 1)]
    records.append(dict(sample=token[(banks[1], 'seed000002')], annotator='a', ratings=dict(detail=5, overall=5)))
    result = P.paired_ratings(records, key, *P.name_banks(key.key['banks']))
    assert result['tuned'] == banks[1] and result['ids'] == 3
    pooled, a = result['pooled']['detail'], result['annotators']['a']['detail']
    assert pooled['n'] == 2 and pooled['mean'] == pytest.approx(((-2 + 0) / 2 + 2) / 2)   # seed000002: tuned only.
    assert a['n'] == 2 and a['mean'] == pytest.approx(0) and a['tuned_higher'] == 0.5
    assert result['pooled']['overall']['equal'] == 1.0 and result['pooled']['overall']['wilcoxon_p'] == 1.0
    key.close()


def test_which_bank_is_tuned():
    assert P.name_banks(['out/b-tuned', 'out/b-orig']) == ('out/b-tuned', 'out/b-orig')
    assert P.name_banks(['x', 'y']) is None and P.name_banks(['a-tuned', 'b-tuned']) is None
    assert P.name_banks(['x', 'y'], original='x') == ('y', 'x')
    assert P.name_banks(['x', 'y', 'z'], tuned='z', original='x') == ('z', 'x')
    with pytest.raises(R.LabelError, match="'w' is none of the rated banks"):
        P.name_banks(['x', 'y'], tuned='w')
    with pytest.raises(R.LabelError, match='3 banks were rated; name both'):
        P.name_banks(['x', 'y', 'z'], tuned='z')
    with pytest.raises(R.LabelError, match='named both tuned and original'):
        P.name_banks(['x', 'y'], tuned='x', original='x')

#----------------------------------------------------------------------------
# The preset, the raters and their refusals.

def test_the_paper5_preset_on_the_command_line():
    assert R.parse_criteria('paper5') == list(R.PRESETS['paper5']) == list(S.CRITERIA)
    help_text = ok(run_label('rate', '--help')).output
    assert 'paper5' in help_text and 'surface_quality' in help_text.replace('\n', '')
    with pytest.raises(R.LabelError, match=r'or a preset \(paper5\)'):
        R.parse_criteria('paper6!')


def test_a_rater_is_its_seed_and_rates_what_it_measures():
    values = dict(condition_consistency=4.6, plausibility=1.2, geometric_detail=3.4, surface_quality=5, overall=3.5)
    assert S.Rater(3, noise=0, leniency=0).rate(values, S.CRITERIA) == dict(condition_consistency=5, plausibility=1,
        geometric_detail=3, surface_quality=5, overall=4)
    assert S.Rater(7).rate(values, S.CRITERIA) == S.Rater(7).rate(values, S.CRITERIA)
    assert S.Rater(7).bias != S.Rater(8).bias
    ref = dict(residual=[0.05, 0.15], head_size=[0.3, 0.4], relief=0.02, roughness=[0.25, 0.3])
    m = dict(family_score=0.95, residual=0.05, head_size=0.35, relief=0.01, roughness=0.25, defects=0.1)
    got = S.ratings_of(m, 1, 8, ref)
    assert got['condition_consistency'] == 1.0 and got['plausibility'] == 5 and got['geometric_detail'] == 3
    assert got['surface_quality'] == 3 and got['overall'] == pytest.approx(3)
    assert S.ratings_of(dict(m, head_size=0.5), 7, 8, ref)['plausibility'] == S.SIZE_CAP
    assert S.ratings_of(m, 7, 8, ref)['condition_consistency'] == 5                # 0.95 x 8 - 0.5: family 7.1, so 7.
    assert S.ratings_of(dict(m, family_score=0.5), 7, 8, ref)['condition_consistency'] == pytest.approx(1.5)


def test_the_tool_refuses_wrong_banks_and_the_page_refuses_other_criteria(banks, tmp_path):
    url = ['--url', 'http://127.0.0.1:9/']
    run = lambda *a: CliRunner().invoke(play_ratings.main, [str(x) for x in [*url, *a, *FAMILY_ARGS]])
    refused_in_one_line(run('--bank', tmp_path / 'nope'), f'{tmp_path / "nope"}: no such bank folder')
    refused_in_one_line(run('--bank', fake_bank(tmp_path / 'pictures-only', count=2)), 'meta.json: has no "slab"')
    shutil.copytree(banks[1], tmp_path / 'unpictured')
    os.remove(tmp_path / 'unpictured' / Bank(banks[1]).ids[0] / 'preview_profile.png')
    refused_in_one_line(run('--bank', tmp_path / 'unpictured'), 'preview_profile.png: cannot be read (No such file')
    out = str(tmp_path / 'r.jsonl')
    key = R.open_ratings(out, [(banks[1], Bank(banks[1]))], ['geometry'])
    with Recorded(R.RatingSession(out, 'x', key), key.sample_of, page=RATE_PAGE_FILE) as server:
        refused_in_one_line(run('--bank', banks[1], '--url', server.url + '/'), 'the page asks for geometry')
    key.close()
    out = str(tmp_path / 'r2.jsonl')
    key = R.open_ratings(out, [(banks[1], Bank(banks[1]))], list(S.CRITERIA))
    with Recorded(R.RatingSession(out, 'x', key), key.sample_of, page=RATE_PAGE_FILE) as server:
        refused_in_one_line(run('--bank', banks[0], '--url', server.url + '/'), 'in none of the banks given')
    key.close()


def test_rated_change_rates_both_banks_as_the_raters_would_and_pairs_them_by_id(banks, tmp_path):
    run = lambda *a: CliRunner().invoke(rated_change.main, [str(x) for x in [*a, *FAMILY_ARGS]])
    out = tmp_path / 'change.json'
    result = run('--base', banks[0], '--tuned', banks[1], '--out', out)
    assert result.exit_code == 0, result.output
    table = json.load(open(out))['criteria']
    by_id = [S.bank_ratings(b, FAMILY) for b in banks]
    d = [by_id[1][i]['surface_quality'] - by_id[0][i]['surface_quality'] for i in sorted(by_id[0])]
    assert table['surface_quality']['change'] == pytest.approx(np.mean(d))
    assert table['surface_quality']['better'] == 8 and table['surface_quality']['change'] > 1   # Floaters removed.
    assert table['surface_quality']['wilcoxon_p'] == pytest.approx(scipy.stats.wilcoxon(d).pvalue)
    assert set(table) == set(S.CRITERIA) and 'surface_quality' in result.output
    swapped = run('--base', banks[1], '--tuned', banks[0], '--out', out, '--force')
    assert json.load(open(out))['criteria']['surface_quality']['change'] == pytest.approx(-np.mean(d)), swapped.output
    refused_in_one_line(run('--base', banks[0], '--tuned', banks[1], '--out', out), 'exists; pass --force')
    shutil.copytree(banks[1], tmp_path / 'fewer')
    shutil.rmtree(tmp_path / 'fewer' / Bank(banks[1]).ids[0])
    refused_in_one_line(run('--base', banks[0], '--tuned', tmp_path / 'fewer'), 'not the same sample ids')
    refused_in_one_line(run('--base', tmp_path / 'nope', '--tuned', banks[1]), 'no such bank folder')


@pytest.mark.slow
def test_score_ratings_refuses_a_tuned_bank_it_did_not_rate(played):
    out, _, _ = played
    refused_in_one_line(run_label('score-ratings', '--out', out, '--tuned', 'elsewhere'),
        "'elsewhere' is none of the rated banks")

#----------------------------------------------------------------------------
