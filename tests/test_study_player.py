"""Person-like annotators (data.person_like) and a blind study played through its page (data.study_player, tools/play_study.py)."""

import json
import signal

import numpy as np
import pytest
from click.testing import CliRunner

from eg3d_rlhf.data import bank as B
from eg3d_rlhf.data import study_player
from eg3d_rlhf.data.annotators import TASTES
from eg3d_rlhf.data.person_like import PersonLikeAnnotator, parse_person
from tests.helpers.label import read_lines
from tests.helpers.study import PREVIEW, nose_bank, run_label, start_page
from tools import play_study

#----------------------------------------------------------------------------

def test_a_person_flips_a_coin_below_the_jnd_and_sees_what_is_above_it():
    person = PersonLikeAnnotator('nose', jnd=0.01, lapse=0.0, seed=1)
    assert person.probability(0.0, 0.0099) == person.probability(0.0099, 0.0) == 0.5
    assert person.probability(0.02, 0.0) > 0.85 and person.probability(0.0, 0.02) < 0.15
    assert person.probability(0.03, 0.0) > person.probability(0.02, 0.0) > person.probability(0.011, 0.0) > 0.5
    below = [person.judge(0.004, 0.0) for _ in range(4000)]
    assert 0.46 < below.count('a') / len(below) < 0.54                          # The taste's side, at chance.
    lapsing = PersonLikeAnnotator('nose', jnd=0.01, lapse=0.2, seed=1)
    assert lapsing.probability(1.0, 0.0) == pytest.approx(0.9)                  # Lapses cap what is seen.
    assert (person.visible(0.01, 0.0), person.visible(0.0099, 0.0)) == (True, False)
    for bad in (0.0, -1.0, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='JND must be a positive'):
            PersonLikeAnnotator('nose', jnd=bad)
    assert parse_person('person:nose') == 'nose'
    for name in ('oracle:nose', 'person:smooth', 'person:', 'nose'):
        with pytest.raises(ValueError, match='person:nose, person:symmetric, person:size'):
            parse_person(name)


ORIGINAL = {f'seed{i:06d}': r for i, r in enumerate(np.linspace(0.04, 0.07, 10))}
TUNED = {x: r - 0.02 if i < 7 else r + 0.01 for i, (x, r) in enumerate(ORIGINAL.items())}    # Smaller noses on 7 of 10.


@pytest.fixture(scope='module')
def banks(tmp_path_factory):
    root = tmp_path_factory.mktemp('person')
    return nose_bank(root / 'bankO', ORIGINAL), nose_bank(root / 'bankT', TUNED)


def measured(folder):
    bank = B.Bank(folder)
    return {x: TASTES['nose'](bank.slab(x), bank.grid(x), 10.0) for x in bank.ids}


def play(banks, out, *args):
    """Start a study of the two banks, play it with tools/play_study.py, score it: (player's output, score.json)."""
    original, tuned = banks
    proc, port = start_page('study', '--original', original, '--tuned', tuned, '--out', out, '--annotator', 'sim',
        '--repeat-rate', '0', '--attention-rate', '0.2')
    try:
        result = CliRunner().invoke(play_study.main, ['--url', f'http://127.0.0.1:{port}/', '--annotator', 'person:nose',
            '--bank', original, '--bank', tuned, '--lapse', '0', *args])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert result.exit_code == 0, result.output
    scored = run_label('score-study', '--out', out)
    assert scored.exit_code == 0, scored.output
    return result.output, json.load(open(f'{out}.score.json'))


def test_a_study_played_through_the_page_sees_what_the_geometry_shows_above_the_jnd(banks, tmp_path):
    before, after = measured(banks[0]), measured(banks[1])
    liked = sum(after[x] > before[x] for x in ORIGINAL)
    assert liked == 7                                               # The measure sees the constructed change.
    output, score = play(banks, str(tmp_path / 'seen.jsonl'), '--jnd', '1e-6')
    assert 'JND 1e-06 world units' in output and 'judged 12 pairs: 2 attention, 10 visible' in output
    pooled = score['pooled']
    assert (pooled['wins'], pooled['losses']) == (liked, 10 - liked)       # Far above the JND: the taste's every choice.
    assert score['annotators']['sim']['attention']['passed'] == 2       # The clean head picked.
    records = [r for r in read_lines(tmp_path / 'seen.jsonl') if 'choice' in r]
    assert not any(k in json.dumps(records) for k in ('bankO', 'bankT', 'seed0000'))   # It judged what the page served.


def test_below_the_jnd_every_pair_is_a_coin_flip_and_the_jnd_is_pixels_of_the_previews(banks, tmp_path):
    grid = B.Bank(banks[0]).grid(next(iter(ORIGINAL)))
    lo, hi = grid.index_to_world(np.zeros(3)), grid.index_to_world(np.asarray(grid.shape) - 1)
    pixel = float(np.max(hi - lo)) / PREVIEW                       # A preview spans the slab's widest side.
    assert study_player.default_jnd(banks[0], 3) == pytest.approx(3 * pixel)
    output, score = play(banks, str(tmp_path / 'blind.jsonl'), '--jnd', '1.0', '--seed', '3')
    assert 'judged 12 pairs: 2 attention, 10 below the JND' in output
    wins = [play(banks, str(tmp_path / f'blind{s}.jsonl'), '--jnd', '1.0', '--seed', str(s))[1]['pooled']['wins']
        for s in range(4)]
    assert len(set(wins)) > 1                                       # Chance, not the taste: seeds disagree.
