"""Banks and scores sharded over torchrun processes: each rank's share, the same files as one process, crash and rerun."""

import json
import os
import shutil

import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf import shards
from tests.helpers.cli import ran
from tests.helpers.torchrun import kill_rank_when, torchrun as run_script
from tools import evaluate, sample_bank, score_bank, train_reward

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#----------------------------------------------------------------------------
# Shares and the environment.

def ranks(monkeypatch, rank, size):
    monkeypatch.setenv('RANK', str(rank))
    monkeypatch.setenv('WORLD_SIZE', str(size))
    monkeypatch.setattr(torch.distributed, 'init_process_group', lambda *a, **k: None)
    return shards.Ranks()


def test_shares_cover_every_item_once_and_keep_one_process_batches(monkeypatch):
    items = list(range(23))
    parts = [ranks(monkeypatch, r, 3).share(items) for r in range(3)]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4, 7, 10, 13, 16, 19, 22]
    chunks = [ranks(monkeypatch, r, 3).share_chunks(items, 4) for r in range(3)]
    assert sorted(c[0] for c in sum(chunks, [])) == [0, 4, 8, 12, 16, 20]
    assert chunks[2] == [[8, 9, 10, 11], [20, 21, 22]]          # Whole chunks of the one-process run, last one short.
    assert ranks(monkeypatch, 0, 1).share(items) == items


@pytest.mark.parametrize('env, words', [
    (dict(RANK='x', WORLD_SIZE='2'), "RANK='x' is not an integer"),
    (dict(RANK='2', WORLD_SIZE='2'), 'RANK=2 does not lie in WORLD_SIZE=2'),
    (dict(RANK='0', WORLD_SIZE='0'), 'does not lie in WORLD_SIZE=0'),
])
def test_a_broken_torchrun_environment_is_one_line(monkeypatch, env, words):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(shards.ShardError, match=words):
        shards.Ranks()

#----------------------------------------------------------------------------
# Two gloo processes under torchrun against one process.

def torchrun(tool, *args, **kwargs):
    """tests.helpers.torchrun.torchrun of tools/<tool>."""
    return run_script(os.path.join(REPO, 'tools', tool), *args, **kwargs)


def bank_args(network, outdir, seeds):
    return ['--network', network, '--trust-pickle', '--seeds', seeds, '--res', '32', '--preview-res', '32',
        '--device', 'cpu', '--outdir', str(outdir)]


def files(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope='module')
def one_process_bank(tiny_network_pkl, tmp_path_factory):
    outdir = tmp_path_factory.mktemp('one') / 'bank'
    result = CliRunner().invoke(sample_bank.main, bank_args(tiny_network_pkl, outdir, '0-6'))
    assert result.exit_code == 0, result.output
    return outdir


@pytest.mark.slow
def test_two_processes_write_the_bank_and_scores_of_one(tiny_network_pkl, one_process_bank, tmp_path):
    from eg3d_rlhf.rewards.checkpoint import save_reward
    from tests.helpers.eg3d import tiny_generator
    from tests.helpers.rewards import slab_description, tiny_reward
    outdir = tmp_path / 'bank'
    result = torchrun('sample_bank.py', *bank_args(tiny_network_pkl, outdir, '0-6'))
    assert f'{outdir}: 7 samples written, 0 were already there (2 processes)' in result.stdout
    assert files(outdir) == files(one_process_bank)

    reward = str(tmp_path / 'reward.pt')
    save_reward(reward, tiny_reward(seed=3), 'sigma', slab_description(32, tiny_generator().rendering_kwargs['box_warp']))
    one = tmp_path / 'one.csv'
    result = CliRunner().invoke(score_bank.main, ['--reward-model', reward, '--bank', str(one_process_bank), '--out',
        str(one), '--batch', '2', '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    two = tmp_path / 'two.csv'
    torchrun('score_bank.py', '--reward-model', reward, '--bank', str(outdir), '--out', str(two), '--batch', '2',
        '--device', 'cpu')
    assert two.read_bytes() == one.read_bytes() and len(two.read_text().splitlines()) == 8


@pytest.mark.slow
def test_kill_9_of_one_rank_and_a_rerun_finish_the_bank(tiny_network_pkl, one_process_bank, tmp_path):
    outdir = tmp_path / 'bank'
    for _ in range(3):                  # On a busy machine the kill may land after the last sample: start again then.
        shutil.rmtree(outdir, ignore_errors=True)
        launcher = torchrun('sample_bank.py', *bank_args(tiny_network_pkl, outdir, '0-6'), wait=False)
        returncode = kill_rank_when(launcher, outdir / 'seed000001' / 'meta.json')     # Rank 1's first sample is done.
        finished = sorted(name for name in os.listdir(outdir) if os.path.exists(outdir / name / 'meta.json'))
        if len(finished) < 7:
            break
    assert returncode != 0 and len(finished) < 7, finished                          # The run did not complete.
    result = torchrun('sample_bank.py', *bank_args(tiny_network_pkl, outdir, '0-6'))
    assert f'{7 - len(finished)} samples written, {len(finished)} were already there' in result.stdout
    assert files(outdir) == files(one_process_bank)


@pytest.mark.slow
@pytest.mark.usefixtures('one_thread')                  # Each rank's threads, for the one-process run.
def test_two_processes_write_the_evaluation_of_one(tiny_pair, tmp_path):
    original, tuned, reward = tiny_pair
    args = lambda out: ['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', reward,
        '--seeds', '0-8', '--annotator', 'oracle:nose', '--temperature', '0', '--res', '32', '--outdir', str(out),
        '--device', 'cpu', '--batch', '3']
    ran(evaluate.main, args(tmp_path / 'one'))
    two = torchrun('evaluate.py', *args(tmp_path / 'two'))
    assert two.stdout.count('reward rose for') == 1                    # Rank 0 reports; rank 1 drew its share.
    reports = [json.loads((tmp_path / side / 'report.json').read_text()) for side in ('one', 'two')]
    assert reports[0]['reward']['seeds'] == 9 and reports[1] == reports[0]
    measures = [(tmp_path / side / 'measures.json').read_bytes() for side in ('one', 'two')]
    assert measures[1] == measures[0]


@pytest.mark.slow
@pytest.mark.usefixtures('one_thread')                  # Each rank's threads, for the one-process run.
def test_two_processes_fit_the_reward_of_one(tmp_path):
    """train_reward under torchrun: the feature table's batches split over the ranks, rank 0 alone writes, and the
    checkpoint holds the weights a one-process fit finds."""
    from eg3d_rlhf.data import annotators, preferences
    from eg3d_rlhf.rewards.checkpoint import load_reward
    from tests.helpers.banks import ball_bank
    bank, radii = ball_bank(tmp_path / 'bank', 40, seed=5)            # Three feature batches of 16: ranks 0, 1, 0.
    oracle = annotators.OracleAnnotator('nose', radii, temperature=0, seed=0)
    labels = str(tmp_path / 'labels.jsonl')
    preferences.write_judgements(labels, oracle.judgements(oracle.draw_pairs(radii, 200)))
    args = lambda out: ['--bank', str(bank), '--labels', labels, '--out', str(out), '--device', 'cpu', '--no-mirror']
    ran(train_reward.main, args(tmp_path / 'one.safetensors'))
    two = torchrun('train_reward.py', *args(tmp_path / 'two.safetensors'))
    assert two.stdout.count('held-out accuracy') == 1 and not list(tmp_path.glob('two.*.tmp*'))   # Rank 0 reports.
    sa, sb = (load_reward(str(tmp_path / f'{n}.safetensors')).model.state_dict() for n in ('one', 'two'))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    reports = [json.loads((tmp_path / f'{n}.report.json').read_text()) for n in ('one', 'two')]
    assert reports[0]['held_out'] == reports[1]['held_out'] and reports[0]['heads'] == reports[1]['heads']
