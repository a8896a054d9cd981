"""Online rounds with people (data/people_round.py, tools/rounds.py --annotator people): the pool of pairs invited
annotators share, the page served until a round's count is judged, and a run killed while people label or while it
fine-tunes that resumes to the same generator and report as the simulated annotator's run."""

import itertools
import json
import os
import re
import threading

import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.data import invites
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.labeling import LabelSession
from eg3d_rlhf.data.people_round import PairPool, serve_round, write_labels
from eg3d_rlhf.data.preferences import load_judgements
from eg3d_rlhf.generators import registry
from eg3d_rlhf.geometry.sigma import slab_grid
from tests.helpers.banks import ball_bank
from tests.helpers.people import SERVING, Runner, judge_pairs
from tests.helpers.train import TRAIN_ARGS
from tools import rounds as tool
from training import legacy

PAIRS = [('ball00', 'ball01'), ('ball02', 'ball03'), ('ball04', 'ball05')]
SPARE = [('ball00', 'ball02')]


def session(path, name, pool):
    return LabelSession(path, name, pool.view(name), pool.count)


def shown(s):
    current = s.state()['current']
    return current and (current['a'], current['b'])


def test_annotators_share_the_pairs_each_judged_once_a_skip_goes_to_the_others(tmp_path):
    path = str(tmp_path / 'people.jsonl')
    pool = PairPool(path, PAIRS + SPARE, 3)
    alice, bob = session(path, 'alice', pool), session(path, 'bob', pool)
    assert shown(alice) == PAIRS[0] and shown(bob) == PAIRS[1]              # One pair to one person at a time.
    alice.judge(*PAIRS[0], 'skip')                                           # Back to the others, not to her.
    assert shown(alice) == PAIRS[2]
    bob.judge(*PAIRS[1], 'b')
    assert shown(bob) == PAIRS[0]
    alice.judge(*PAIRS[2], 'tie')                                            # A tie is a judgement.
    assert shown(alice) == SPARE[0] and pool.done() == 2                     # Every chosen pair taken: a spare.
    bob.judge(*PAIRS[0], 'a')
    assert pool.done() == 3 and shown(bob) is None and shown(session(path, 'carol', pool)) is None
    labels = write_labels(pool, str(tmp_path / 'labels.jsonl'))
    assert [(j.a, j.b, j.choice, j.annotator) for j in labels] == [(*PAIRS[0], 'a', 'bob'), (*PAIRS[1], 'b', 'bob'),
        (*PAIRS[2], 'tie', 'alice')]                                         # In the pool's order, whoever judged.
    assert [(j.a, j.b) for j in load_judgements(str(tmp_path / 'labels.jsonl'))] == PAIRS


def test_a_pair_shown_to_someone_who_left_goes_to_another_after_the_claim_time(tmp_path):
    path = str(tmp_path / 'people.jsonl')
    pool = PairPool(path, PAIRS[:1], 1, claim_seconds=0.0)
    assert shown(session(path, 'alice', pool)) == PAIRS[0]
    assert shown(session(path, 'bob', pool)) == PAIRS[0]                     # Alice's claim has run out.
    assert PairPool(path, PAIRS[:1], 1).next_pair('carol') == PAIRS[0]       # A new server knows no claims.


def test_a_round_is_served_to_invited_annotators_until_its_count_is_judged(tmp_path, capsys):
    folder, radii = ball_bank(tmp_path / 'bank', 6)
    path = str(tmp_path / 'people.jsonl')
    tokens = {name: invites.invite(path, name) for name in ('alice', 'bob')}
    pool = PairPool(path, PAIRS + SPARE, 3)
    done, result = [], {}
    server = threading.Thread(target=lambda: result.update(address=serve_round(pool, Bank(folder), host='0.0.0.0',
        port=0, invites=invites.Invites(path), progress=done.append, poll=0.05)))
    server.start()
    while not done:                                                          # Called once it listens.
        server.join(0.05)
    found = SERVING.search(capsys.readouterr().out)
    assert found and found.group(2) == folder
    counts = []
    players = [threading.Thread(target=lambda t=t: counts.append(judge_pairs(int(found.group(1)), t, folder, 'size')))
        for t in tokens.values()]
    for p in players:
        p.start()
    server.join(60)
    assert not server.is_alive() and result['address'] == f'http://0.0.0.0:{found.group(1)}/' and done[-1] == 3
    for p in players:
        p.join(60)
    assert len(counts) == 2 and sum(counts) >= 3                             # Every judgement made got its reply.
    assert {j.annotator for j in load_judgements(path)} <= {'alice', 'bob'}
    assert [(j.a, j.b, j.choice) for j in pool.labels()] == [(a, b, 'a' if radii[a] > radii[b] else 'b') for a, b in PAIRS]


@pytest.mark.parametrize('args, message', [
    (['--annotator', 'people'], 'people on loopback is one person'),
    (['--annotator', 'people:bad name'], "'bad name': use 1-64 letters"),
    (['--annotator', 'oracle:smooth', '--invite', 'alice'], 'invites are for people beyond loopback'),
    (['--annotator', 'people', '--host', '0.0.0.0', '--port', '0', '--invite', 'alice'], 'on a fixed --port'),
    (['--annotator', 'people:alice', '--gold-taste', 'oracle:wings'], "unknown annotator 'oracle:wings'"),
])
def test_bad_people_settings_are_refused_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(tool.main, ['--outdir', str(tmp_path / 'r'), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not os.path.exists(tmp_path / 'r')


def surfaced(start_pkl, path, seeds=(20000, 20001, 20002, 20003)):
    """start_pkl with its decoder's sigma scaled and shifted so that, over a few samples at res 16, the density has
    mean 10 (the tastes' level) and sd 5: the tiny generator's own (about -0.6 +- 0.2) has no surface, so every taste
    would tie; now the samples' surfaces differ and the scripted people have something to judge."""
    def adjust(scale, shift):
        data = legacy.load_network_pkl(str(path) if os.path.isfile(path) else start_pkl, trust=True)
        for name in ('G', 'G_ema'):
            fc = data[name].decoder.net[2]
            with torch.no_grad():
                fc.weight[0] *= scale
                fc.bias[0] = scale * fc.bias[0] + shift / fc.bias_gain
        legacy.save_network_pkl(str(path), data)
        G = registry.family_of_file(str(path)).load(str(path), 'cpu')
        return G.sigma_grid(seeds, slab_grid(16, cube_length=G.cube_length)).numpy()
    sigma = adjust(1.0, 0.0)
    sigma = adjust(5 / sigma.std(), 0.0)
    assert abs(adjust(1.0, 10 - sigma.mean()).mean() - 10) < 0.5
    return str(path)


def weights(path):
    return legacy.load_network_pkl(str(path), trust=True)['G_ema'].state_dict()


def lines(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_people_over_http_killed_while_labelling_and_tuning_end_as_the_simulated_annotators_run(data, start_pkl, tmp_path):
    common = ['--network', surfaced(start_pkl, tmp_path / 'start.pkl'), '--trust-pickle', '--rounds', '2',
        '--judgements', '66', '--check', '4', '--keep-better', '--bank-size', '12', '--res', '16', '--kimg', '0.004',
        '--temperature', '0', '--eval-seeds', '900-901', '--', '--cfg', 'synthetic',
        '--data', data, '--gpus', '1', '--batch', '4', '--gamma', '1', '--device', 'cpu', *TRAIN_ARGS, '--tick', '0.004',
        '--panel-seeds', '3-4']
    oracle = tmp_path / 'oracle'                  # The noise-free simulated annotator: what scripted people answer.
    result = CliRunner().invoke(tool.main, ['--outdir', str(oracle), '--annotator', 'oracle:smooth', *common])
    assert result.exit_code == 0, result.output
    outdir = tmp_path / 'people'
    outdir.mkdir()
    tokens = {name: invites.invite(str(outdir / 'people'), name) for name in ('alice', 'bob')}
    args = ['--outdir', outdir, '--annotator', 'people', '--gold-taste', 'oracle:smooth', '--host', '0.0.0.0',
        '--port', '0', *common]
    labelling = Runner(args, tokens, 'smooth', limits={0: 2})                 # Two pairs each, then kill -9.
    assert labelling.kill_when(lambda: lines(outdir / 'round-0' / 'people.jsonl') >= 4), labelling.output()
    assert not (outdir / 'round-0' / 'labels.jsonl').exists()
    tuning = Runner(args, tokens, 'smooth')                                    # Serves the rest; killed in round 1's tune.
    assert tuning.kill_when(lambda: any((outdir / 'round-1' / 'train').glob('*/*.json'))), tuning.output()
    assert 'serving http://0.0.0.0:' in tuning.output() and not (outdir / 'round-1' / 'generator.pkl').exists()
    last = Runner(args, tokens, 'smooth')
    assert last.wait() == 0, last.output()
    people = load_judgements(str(outdir / 'round-0' / 'people.jsonl'))
    assert {j.annotator for j in people} == {'alice', 'bob'} and len(people) >= 62     # 66 less the 4 checked.
    for k, name in itertools.product((0, 1), ('labels.jsonl', 'check.jsonl')):       # The check's page too.
        got, want = (load_judgements(str(d / f'round-{k}' / name)) for d in (outdir, oracle))
        assert [(j.a, j.b, j.choice) for j in got] == [(j.a, j.b, j.choice) for j in want] and len(got) == (
            62 if name == 'labels.jsonl' else 4)
        assert name == 'labels.jsonl' or all(j.a[2:] == 'x-' + j.b[4:] for j in got)   # Each seed's x against y.
    a, b = weights(outdir / 'round-1' / 'generator.pkl'), weights(oracle / 'round-1' / 'generator.pkl')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    truth = re.compile(r' \(noise-free: [^)]*\)')                           # People's truth is unknown.
    assert (outdir / 'rounds.md').read_text() == truth.sub('', (oracle / 'rounds.md').read_text())
    got, want = (json.loads((d / 'rounds.json').read_text())['rounds'] for d in (outdir, oracle))
    for row in want:
        row['check']['truth'] = None
        before = row['before_refit'] or dict(random={}, active={})           # None in round 0.
        for part in (before, before['random'], before['active'], row['check_reward']):
            part['accuracy_vs_truth'] = None
    assert got == want
