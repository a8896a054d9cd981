"""Hostile but ordinary inputs: each is refused in one line, runs no code without consent and changes no existing file."""

import importlib
import os
import stat
import threading

import pytest
from click.testing import CliRunner

from eg3d_rlhf.synthetic import demo
from tests.helpers.cli import digest, refused_in_one_line
from tests.helpers.evaluate import save_feature_network
from tools import annotate, evaluate, train_reward

pytestmark = pytest.mark.usefixtures('one_thread')


def sentinel(folder):
    """A file someone keeps in the folder a tool runs in; returns a check that it alone is there, unchanged."""
    path = folder / 'notes.txt'
    path.write_text('work that must survive a refused command\n')
    before = digest(path)
    return lambda: os.listdir(folder) == ['notes.txt'] and digest(path) == before

#----------------------------------------------------------------------------
# People's labels and checkpoints are never replaced without --force.

@pytest.mark.parametrize('args', [
    ['pairs', '--pairs', 5, '--out', '{labels}'],
    ['pairs', '--pairs', 5, '--out', '{fresh}', '--scores-out', '{labels}'],
    ['good-bad', '--good', '{labels}', '--bad', '{fresh}'],
    ['good-bad', '--good', '{fresh}', '--bad', '{labels}'],
    ['pairs', '--pairs', 5, '--out', '{labels}', '--dry-run'],
])
def test_annotate_never_replaces_a_file_without_force(faces, tmp_path, args):
    labels = tmp_path / 'labels.jsonl'
    labels.write_text('{"a": "x", "b": "y", "choice": "a", "annotator": "alice", "time": "2026-11-22T10:00:00"}\n')
    before = digest(labels)
    names = dict(labels=labels, fresh=tmp_path / 'fresh.txt')
    argv = [str(a).format(**names) for a in args[:1] + ['--bank', faces, '--annotator', 'oracle:nose'] + args[1:]]
    refused_in_one_line(CliRunner().invoke(annotate.main, argv), f'{labels} exists; pass --force to replace it')
    assert digest(labels) == before and not (tmp_path / 'fresh.txt').exists()
    if '--dry-run' not in args:
        result = CliRunner().invoke(annotate.main, argv + ['--force'])
        assert result.exit_code == 0, result.output
        assert digest(labels) != before


@pytest.mark.parametrize('existing', ['reward.pt', 'reward.metrics.jsonl', 'reward.report.json', 'reward.curves.png'])
def test_train_reward_never_replaces_a_checkpoint_without_force(balls, tiny_models, tmp_path, existing):
    (tmp_path / existing).write_bytes(b'a checkpoint someone trained for a day')
    before = digest(tmp_path / existing)
    result = CliRunner().invoke(train_reward.main, ['--device', 'cpu', '--bank', balls['bank'], '--labels', balls['labels'],
        '--epochs', 1, '--out', str(tmp_path / 'reward.pt')])
    refused_in_one_line(result, f'{tmp_path / existing} exists; pass --force to replace it')
    assert digest(tmp_path / existing) == before and sorted(p.name for p in tmp_path.iterdir()) == [existing]

def files_under(folder):
    """{relative path: sha256} of every file under `folder`."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob('*')) if p.is_file()}


def test_score_bank_never_replaces_a_file_without_force_nor_ever_its_inputs(tmp_path):
    from eg3d_rlhf.data.bank import Bank
    from eg3d_rlhf.rewards.checkpoint import save_reward
    from tests.helpers.banks import ball_bank
    from tests.helpers.rewards import tiny_sigma
    from tools import score_bank
    bank_dir, _ = ball_bank(tmp_path / 'bank', 3, seed=2)
    reward = tmp_path / 'r.pt'
    save_reward(str(reward), tiny_sigma(seed=7).eval(), 'sigma', Bank(bank_dir).meta('ball00')['slab'])
    scores = tmp_path / 'scores.csv'
    scores.write_text('id,reward\nball00,1.0\n')
    before = {'bank': files_under(tmp_path / 'bank'), 'r.pt': digest(reward), 'scores.csv': digest(scores)}
    run = lambda out, *extra: CliRunner().invoke(score_bank.main, ['--device', 'cpu', '--reward-model', str(reward),
        '--bank', bank_dir, '--out', str(out), *extra])
    refused_in_one_line(run(scores), f'{scores} exists; pass --force to replace it')      # Before: replaced.
    meta = tmp_path / 'bank' / 'ball00' / 'meta.json'
    for out, flag, path in ((reward, '--reward-model', reward), (meta, '--bank', bank_dir)):
        for extra in ([], ['--force']):
            refused_in_one_line(run(out, *extra), f'{out} would write over {flag} {path}, which this command reads')
    assert {'bank': files_under(tmp_path / 'bank'), 'r.pt': digest(reward), 'scores.csv': digest(scores)} == before
    assert run(scores, '--force').exit_code == 0 and digest(scores) != before['scores.csv']


def test_generator_demo_never_writes_into_a_bank_nor_over_a_folder_without_force(tmp_path):
    from tests.helpers.banks import ball_bank
    from tools import generator_demo
    bank_dir, _ = ball_bank(tmp_path / 'bank', 2, seed=0)
    (tmp_path / 'bank' / 'bank.json').write_text('{"note": "what made the bank"}\n')
    before = files_under(tmp_path / 'bank')
    run = lambda outdir, *extra: CliRunner().invoke(generator_demo.main, ['--outdir', str(outdir), '--network',
        'random', '--res', '16', '--neural-res', '16', *extra])
    for outdir in (tmp_path / 'bank' / 'ball00', tmp_path / 'bank', tmp_path / 'bank' / 'ball01' / 'demo'):
        for extra in ([], ['--force']):                                  # Before: ball00's slab rewritten in place.
            refused_in_one_line(run(outdir, *extra), f'--outdir {outdir} lies inside the sample bank {tmp_path / "bank"}')
    assert files_under(tmp_path / 'bank') == before
    (tmp_path / 'mine').mkdir()
    untouched = sentinel(tmp_path / 'mine')
    refused_in_one_line(run(tmp_path / 'mine', '--dry-run'), f'{tmp_path / "mine"} holds files already; pass --force')
    assert untouched()
    result = run(tmp_path / 'mine', '--dry-run', '--force')
    assert result.exit_code == 0 and 'would build random FFHQ-512 structure' in result.output, result.output


def test_train_flow_never_runs_into_another_runs_folder_without_force(tmp_path):
    import json
    from tools import train_flow
    common = ['--preset', 'tiny', '--batch', '2', '--snap', '2', '--device', 'cpu', '--preview', '0', '--steps', '2']
    run = lambda *extra: CliRunner().invoke(train_flow.main, ['--outdir', str(tmp_path / 'run'), *common, *extra])
    assert run().exit_code == 0
    before = files_under(tmp_path / 'run')
    for extra in ([], ['--seed', '1'], ['--resume', str(tmp_path / 'elsewhere.pt')]):
        if extra[:1] == ['--resume']:
            (tmp_path / 'elsewhere.pt').write_bytes((tmp_path / 'run' / 'flow-000002.pt').read_bytes())
        refused_in_one_line(run(*extra), f'{tmp_path / "run"} holds files already; pass --force')   # Before: mixed.
        assert files_under(tmp_path / 'run') == before
    assert run('--seed', '1', '--force').exit_code == 0                  # A new run in its place: its stats alone.
    steps = [json.loads(line)['step'] for line in (tmp_path / 'run' / 'stats.jsonl').read_text().splitlines()]
    assert steps == [1, 2] and digest(tmp_path / 'run' / 'flow-000002.pt') != before['flow-000002.pt']

#----------------------------------------------------------------------------
# Code runs only with consent.

@pytest.mark.filterwarnings('ignore::DeprecationWarning')
@pytest.mark.parametrize('kind', ['export', 'torchscript'])
def test_evaluate_refuses_a_feature_archive_without_trust(tmp_path, kind):
    net = save_feature_network(str(tmp_path / 'features.pt2'), kind)
    before = digest(tmp_path / 'features.pt2')
    result = CliRunner().invoke(evaluate.main, ['--original', 'bundled', '--tuned', 'bundled', '--reward-model',
        os.path.join(demo.CHECKPOINTS, 'reward-sigma-nose.safetensors'), '--inception', net, '--outdir', str(tmp_path / 'r'), '--device', 'cpu'])
    refused_in_one_line(result, 'archive with pickled parts; loading it can run code stored in it, so pass --trust-pickle')
    assert digest(tmp_path / 'features.pt2') == before and not (tmp_path / 'r').exists()


def evil_pickle(marker):
    """A pickle (protocol 4: it looks like an EG3D network pickle) whose loading writes `marker`."""
    import pickle

    class Evil:
        def __reduce__(self):
            return exec, (f'open({str(marker)!r}, "w").write("code ran")',)
    return pickle.dumps(Evil(), protocol=4)


@pytest.mark.parametrize('how', ['load_generator', 'tool'])
def test_a_network_file_swapped_after_its_check_loads_what_was_checked(tmp_path, monkeypatch, how):
    from eg3d_rlhf import cli
    from eg3d_rlhf.generators import flow_heads, registry
    from eg3d_rlhf.generators.flow import FlowGenerator
    from tests.helpers.flow import TINY
    from tools import extract_sigma
    path, marker = tmp_path / 'tuned.pt', tmp_path / 'ran'
    flow_heads.save_flow(str(path), flow_heads.build_pipeline(TINY, init_seed=0), TINY)
    recognise = registry.family_of_file

    def check_then_swap(checked):                       # Another process replaces the file right after each check.
        family = recognise(checked)
        path.write_bytes(evil_pickle(marker))
        return family
    monkeypatch.setattr(registry, 'family_of_file', check_then_swap)
    if how == 'load_generator':
        try:
            G = cli.load_generator(cli.network_path(str(path), trust_pickle=False), 'cpu')
        finally:                                        # Before: loaded as a trusted pickle, so its code ran.
            assert not marker.exists(), 'the pickle swapped in after the check ran its code'
        assert isinstance(G, FlowGenerator) and G.conditions == TINY['conditions']      # What was checked.
    else:
        result = CliRunner().invoke(extract_sigma.main, ['--network', str(path), '--seeds', '0', '--res', '12',
            '--outdir', str(tmp_path / 'x')])
        assert not marker.exists(), 'the pickle swapped in after the check ran its code'
        assert result.exit_code == 0 and len(list((tmp_path / 'x').glob('*.npy'))) == TINY['conditions'], result.output

#----------------------------------------------------------------------------
# Numbers: nan and inf are refused wherever a number is expected.

@pytest.mark.parametrize('tool, args, flag', [
    ('train.py', ['--outdir=o', '--cfg=synthetic', '--data=d.zip', '--gpus=1', '--batch=4', '--gamma=1', '--kimg=nan'], '--kimg'),
    ('train.py', ['--outdir=o', '--cfg=synthetic', '--data=d.zip', '--gpus=1', '--batch=4', '--gamma=inf'], '--gamma'),
    ('train.py', ['--reward=sigma', '--lambda-r=nan'], '--lambda-r'),
    ('train.py', ['--outdir=o', '--cfg=synthetic', '--data=d.zip', '--gpus=1', '--batch=4', '--gamma=1', '--glr=nan'], '--glr'),
    ('tools/extract_sigma.py', ['--network=bundled', '--seeds=0', '--trunc=nan', '--outdir=o'], '--trunc'),
    ('tools/sample_bank.py', ['--network=bundled', '--seeds=0', '--trunc=inf', '--outdir=o'], '--trunc'),
    ('tools/annotate.py', ['pairs', '--bank=b', '--annotator=oracle:nose', '--pairs=3', '--out=o', '--temperature=nan'], '--temperature'),
    ('tools/attribute.py', ['--bank=b', '--reward-model=r', '--outdir=o', '--level=nan'], '--level'),
    ('tools/tails.py', ['--bank=b', '--reward-model=r', '--outdir=o', '--level=-inf'], '--level'),
    ('tools/evaluate.py', ['--original=bundled', '--tuned=bundled', '--reward-model=r', '--outdir=o', '--temperature=nan'],
        '--temperature'),
])
def test_non_finite_numbers_are_refused(tool, args, flag, tmp_path, monkeypatch):
    untouched = sentinel(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(tool_main(tool), [*args, '--dry-run'])       # In-process: its click command.
    named = f"Invalid value for '{flag}'" in result.output or f'{flag}=nan: expected a finite number' in result.output
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit) and named, (result.output, result.exception)
    assert untouched()

#----------------------------------------------------------------------------
# Banks and label files that are not what they claim.

def test_banks_refuse_non_finite_slabs_on_write_and_read(tiny_pair, tmp_path):
    import numpy as np
    import torch
    from eg3d_rlhf.cli import load_generator
    from eg3d_rlhf.data.bank import Bank, BankError, BankWriter
    G = load_generator(tiny_pair[0], torch.device('cpu'))
    writer = BankWriter(str(tmp_path / 'bank'), G, resolution=24, dtype='float32', preview_res=16)
    writer.open()
    writer.write(0)
    field = G.field
    G.field = lambda seeds, condition=None: type('F', (), {'sample_grid': lambda self, grid: torch.full(
        [1, *grid.shape], float('nan'))})()
    with pytest.raises(BankError, match='seed000001: the generator.s slab holds nan or inf; nothing written'):
        writer.write(1)
    assert not (tmp_path / 'bank' / 'seed000001').exists()
    G.field = field
    slab = tmp_path / 'bank' / 'seed000000' / 'sigma_slab.npy'
    bad = np.load(slab)
    bad[0, 0, 0] = np.inf
    np.save(slab, bad)
    with pytest.raises(BankError, match=r'sigma_slab.npy: holds nan or inf; redraw the sample'):
        Bank(str(tmp_path / 'bank')).slab('seed000000')
    slab.write_bytes(b'\x93NUMPY broken')
    with pytest.raises(BankError, match=r'sigma_slab.npy: cannot be read'):
        Bank(str(tmp_path / 'bank')).slab('seed000000')


@pytest.mark.parametrize('content, message', [
    (b'\xff\xfe{"a": 1}\n', 'not UTF-8 text'),
    (b'[' * 100000 + b'\n', 'nested too deeply'),
    (b'{"a": "x", "b": "y"\n', 'not JSON'),
])
def test_label_files_that_are_not_text_or_too_deep_are_refused(tmp_path, content, message):
    from eg3d_rlhf.data import preferences
    path = tmp_path / 'labels.jsonl'
    path.write_bytes(content)
    with pytest.raises(preferences.LabelError, match=message) as err:
        preferences.load_judgements(str(path))
    assert str(path) in str(err.value) and path.read_bytes() == content


def test_train_reward_on_a_bank_with_a_nan_slab_stops_in_one_line(balls, tiny_models, tmp_path):
    import shutil
    import numpy as np
    bank = tmp_path / 'bank'
    shutil.copytree(balls['bank'], bank)
    first = sorted(p for p in bank.iterdir() if p.is_dir())[0]
    slab = np.load(first / 'sigma_slab.npy')
    slab[1, 1, 1] = np.nan
    np.save(first / 'sigma_slab.npy', slab)
    result = CliRunner().invoke(train_reward.main, ['--device', 'cpu', '--bank', str(bank), '--labels', balls['labels'],
        '--epochs', 1, '--out', str(tmp_path / 'r.pt')])
    refused_in_one_line(result, 'sigma_slab.npy: holds nan or inf')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bank']


def test_train_reward_that_diverges_writes_no_checkpoint(balls, tiny_models, tmp_path):
    result = CliRunner().invoke(train_reward.main, ['--device', 'cpu', '--bank', balls['bank'], '--labels', balls['labels'],
        '--epochs', 2, '--lr', '1e30', '--out', str(tmp_path / 'r.pt')])
    refused_in_one_line(result, 'reward training diverged at step')
    assert not list(tmp_path.iterdir())                         # No checkpoint, and nothing a rerun would trip on.


def test_analysis_tools_refuse_a_bank_with_a_nan_slab_in_one_line(tiny_pair, tmp_path):
    import numpy as np
    import torch
    from eg3d_rlhf.cli import load_generator
    from eg3d_rlhf.data.bank import BankWriter
    from tools import attribute, embed, tails
    writer = BankWriter(str(tmp_path / 'bank'), load_generator(tiny_pair[0], torch.device('cpu')), resolution=24,
        dtype='float32', preview_res=16)
    writer.open()
    for seed in range(4):
        writer.write(seed)
    slab = tmp_path / 'bank' / 'seed000002' / 'sigma_slab.npy'
    bad = np.load(slab)
    bad[3, 3, 3] = np.nan
    np.save(slab, bad)
    before = digest(slab)
    common = ['--bank', str(tmp_path / 'bank'), '--reward-model', tiny_pair[2]]
    for tool, args in ((attribute, ['--outdir', str(tmp_path / 'a')]), (embed, ['--outdir', str(tmp_path / 'e')]),
            (tails, ['--outdir', str(tmp_path / 't')])):
        refused_in_one_line(CliRunner().invoke(tool.main, common + args), 'sigma_slab.npy: holds nan or inf')
    assert digest(slab) == before

#----------------------------------------------------------------------------
# Outputs that cannot be written are refused when the command line is read, before any work.

OUTPUT_FLAGS = [
    ('train.py', [], '--outdir', 'dir'),
    ('tools/annotate.py', ['pairs'], '--out', 'file'),
    ('tools/annotate.py', ['pairs'], '--scores-out', 'file'),
    ('tools/annotate.py', ['good-bad'], '--good', 'file'),
    ('tools/attribute.py', [], '--outdir', 'dir'),
    ('tools/bundle_checkpoint.py', [], '--out', 'file'),
    ('tools/embed.py', [], '--outdir', 'dir'),
    ('tools/evaluate.py', [], '--outdir', 'dir'),
    ('tools/extract_sigma.py', [], '--outdir', 'dir'),
    ('tools/flow_report.py', [], '--outdir', 'dir'),
    ('tools/generator_demo.py', [], '--outdir', 'dir'),
    ('tools/make_dataset.py', ['synthetic-heads'], '--out', 'file'),
    ('tools/make_dataset.py', ['grid'], '--out', 'file'),
    ('tools/sample_bank.py', [], '--outdir', 'dir'),
    ('tools/score_bank.py', [], '--out', 'file'),
    ('tools/shape_report.py', [], '--outdir', 'dir'),
    ('tools/tails.py', [], '--outdir', 'dir'),
    ('tools/train_flow.py', [], '--outdir', 'dir'),
    ('tools/train_reward.py', [], '--out', 'file'),
]

def tool_main(tool):
    """The click command of train.py or tools/<name>.py (their __main__ only calls it)."""
    return importlib.import_module('train' if tool == 'train.py' else 'tools.' + os.path.basename(tool)[:-3]).main


@pytest.mark.parametrize('tool, sub, flag, kind', OUTPUT_FLAGS, ids=[f'{t} {f}' for t, _, f, _ in OUTPUT_FLAGS])
def test_an_output_under_a_file_is_refused_before_any_work(tool, sub, flag, kind, tmp_path):
    blocker = tmp_path / 'notes.txt'
    blocker.write_text('a file where a folder would have to be')
    before = digest(blocker)
    result = CliRunner().invoke(tool_main(tool), sub + [flag, str(blocker / 'out' / 'x')])
    assert result.exit_code == 2 and f"Invalid value for '{flag}'" in result.output, result.output
    assert f'{blocker} is a file, so nothing can be made under it; choose another' in result.output
    assert 'Traceback' not in result.output and digest(blocker) == before and os.listdir(tmp_path) == ['notes.txt']


@pytest.mark.parametrize('kind', ['dir', 'file'])
def test_an_output_the_user_cannot_write_or_of_the_wrong_kind_is_named(tmp_path, monkeypatch, kind):
    from dnnlib.util import writable_problem
    (tmp_path / 'a_folder').mkdir()
    (tmp_path / 'a_file').write_text('x')
    assert writable_problem(str(tmp_path / 'new' / 'deeper'), kind) is None             # Made when needed.
    wrong = tmp_path / ('a_file' if kind == 'dir' else 'a_folder')
    assert writable_problem(str(wrong), kind) == f'{wrong} exists and is {"not " if kind == "dir" else ""}a folder'
    monkeypatch.setattr(os, 'access', lambda path, mode: False)                         # Root may write anywhere.
    assert writable_problem(str(tmp_path / 'new'), kind) == f'cannot write in {tmp_path} (permission denied)'

#----------------------------------------------------------------------------
# Reward checkpoints whose config and weights disagree, or whose weights are not finite.

@pytest.mark.parametrize('edit, message', [
    (lambda d: d['state_dict']['stem.0.weight'].view(-1).__setitem__(0, float('nan')), 'weight stem.0.weight holds nan or inf'),
    (lambda d: d['config'].__setitem__('channels', [2**20] * 5), 'its config does not describe its weights'),
    (lambda d: d['state_dict'].pop('stem.1.weight'), 'its config does not describe its weights (stem.1.weight differ)'),
    (lambda d: d['state_dict'].__setitem__('stem.0.weight', 'not a tensor'), 'its config does not describe its weights'),
])
def test_reward_checkpoints_edited_or_diverged_are_refused_in_one_line(tmp_path, edit, message):
    import torch
    import train
    from eg3d_rlhf.rewards.checkpoint import FORMATS
    from torch_utils import safetensors_file
    data = safetensors_file.load(os.path.join(demo.CHECKPOINTS, 'reward-sigma-nose.safetensors'), FORMATS)
    edit(data)
    path = tmp_path / 'reward.pt'
    torch.save(data, str(path))
    before = digest(path)
    result = CliRunner().invoke(train.main, ['--reward=sigma', f'--reward-model={path}', f'--outdir={tmp_path / "runs"}',
        '--dry-run'])
    refused_in_one_line(result, f'--reward-model: {path}: sigma reward: {message}')
    assert digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ['reward.pt']

#----------------------------------------------------------------------------
# Seeds numpy cannot take, or more seeds than memory holds.

@pytest.mark.parametrize('tool, args, message', [
    ('tools/extract_sigma.py', ['--seeds', '99999999999999999999'], 'seeds go up to 4294967295'),
    ('tools/sample_bank.py', ['--seeds', '0-99999999999'], 'seeds go up to 4294967295'),
    ('tools/sample_bank.py', ['--seeds', '0-4000000000'], 'names more than 10,000,000 seeds'),
    ('tools/evaluate.py', ['--seeds', '5,4294967296'], 'seeds go up to 4294967295'),
    ('train.py', ['--seed', str(2**40)], "Invalid value for '--seed'"),
    ('tools/train_reward.py', ['--split-seed', '-1'], "Invalid value for '--split-seed'"),
    ('tools/annotate.py', ['pairs', '--seed', str(2**33)], "Invalid value for '--seed'"),
])
def test_seeds_out_of_range_are_refused_in_one_line(tool, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    untouched = sentinel(tmp_path)
    result = CliRunner().invoke(tool_main(tool), args + ['--dry-run'])
    assert result.exit_code == 2 and message in result.output and 'Traceback' not in result.output, result.output
    assert untouched()

#----------------------------------------------------------------------------
# A broken slab file is found before the work starts, not after it.

@pytest.mark.parametrize('damage, message', [
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), 'its header says [12, 14, 13] float32 (8.53 KiB), but the file holds 8636'),
    (lambda p: p.write_bytes(b'not numpy at all'), 'cannot be read'),
    (lambda p: __import__('numpy').save(p, __import__('numpy').zeros([3, 3, 3], 'float32')), 'shape [3, 3, 3], but meta.json says [12, 14, 13]'),
])
def test_tools_check_every_slab_file_before_any_work(tiny_pair, tmp_path, damage, message):
    import torch
    from eg3d_rlhf.cli import load_generator
    from eg3d_rlhf.data.bank import BankWriter
    from tools import annotate, embed, score_bank, tails
    writer = BankWriter(str(tmp_path / 'bank'), load_generator(tiny_pair[0], torch.device('cpu')), resolution=24,
        dtype='float32', preview_res=16)
    writer.open()
    for seed in range(4):
        writer.write(seed)
    slab = tmp_path / 'bank' / 'seed000003' / 'sigma_slab.npy'
    damage(slab)
    before = digest(slab)
    bank, reward = str(tmp_path / 'bank'), tiny_pair[2]
    for tool, args in ((score_bank, ['--bank', bank, '--reward-model', reward, '--out', str(tmp_path / 's.csv')]),
            (embed, ['--bank', bank, '--reward-model', reward, '--outdir', str(tmp_path / 'e')]),
            (tails, ['--bank', bank, '--reward-model', reward, '--outdir', str(tmp_path / 't')]),
            (annotate, ['pairs', '--bank', bank, '--annotator', 'oracle:nose', '--pairs', '3', '--out', str(tmp_path / 'l.jsonl')])):
        refused_in_one_line(CliRunner().invoke(tool.main, args), f'{slab}: {message}')
    assert digest(slab) == before and sorted(p.name for p in tmp_path.iterdir()) == ['bank']

#----------------------------------------------------------------------------
# A FIFO where a file is expected is refused in one line; nothing waits for a writer that never comes.

HANGS = {                                               # (tool, arguments): FIFO stands for the FIFO's path.
    'reward checkpoint':    ('tools/score_bank.py', ['--reward-model', 'FIFO', '--bank', 'BANK', '--out', 's.csv']),
    'train_reward labels':  ('tools/train_reward.py', ['--bank', 'BANK', '--labels', 'FIFO', '--out', 'r.pt']),
    'truth CSV':            ('tools/train_reward.py', ['--bank', 'BANK', '--labels', 'LABELS', '--truth', 'FIFO',
                             '--out', 'r.pt', '--dry-run']),
    'label stats':          ('tools/label.py', ['stats', 'FIFO']),
    'evaluate --labels':    ('tools/evaluate.py', ['--original', 'bundled', '--tuned', 'bundled', '--reward-model',
                             'REWARD', '--labels', 'FIFO', '--seeds', '0', '--outdir', 'report']),
    'train.py --labels':    ('train.py', ['--generator', 'flow', '--labels', 'FIFO', '--bank', 'BANK', '--outdir', 'runs',
                             '--dry-run']),
    'region names':         ('tools/attribute.py', ['--bank', 'BANK', '--reward-model', 'REWARD', '--regions', 'NPY',
                             '--region-names', 'FIFO', '--outdir', 'a']),
    'slab':                 ('tools/annotate.py', ['pairs', '--bank', 'FIFOBANK', '--annotator', 'oracle:nose', '--pairs',
                             '3', '--out', 'l.jsonl']),
    'network':              ('tools/extract_sigma.py', ['--network', 'FIFO', '--seeds', '0', '--outdir', 'x', '--dry-run']),
}


@pytest.mark.parametrize('case', sorted(HANGS))
def test_a_fifo_where_a_file_is_expected_is_refused_without_hanging(balls, tmp_path, case, monkeypatch):
    import shutil
    import numpy as np
    tool, args = HANGS[case]
    fifo = tmp_path / 'input'
    if case == 'slab':                                  # One sample's slab of a copied bank is a FIFO.
        shutil.copytree(balls['bank'], tmp_path / 'bank')
        fifo = sorted((tmp_path / 'bank').iterdir())[0] / 'sigma_slab.npy'
        fifo.unlink()
    os.mkfifo(fifo)
    np.save(tmp_path / 'regions.npy', np.zeros([2, 2, 2], np.int64))
    names = dict(FIFO=fifo, BANK=balls['bank'], LABELS=balls['labels'], FIFOBANK=tmp_path / 'bank', NPY=tmp_path /
        'regions.npy', REWARD=os.path.join(demo.CHECKPOINTS, 'reward-sigma-nose.safetensors'))
    argv = [str(names.get(a, a)) for a in args]
    monkeypatch.chdir(tmp_path)
    result = invoke_within(60, tool_main(tool), argv, fifo)    # Before: waited forever for a writer.
    errors = [line for line in result.output.splitlines() if line.startswith('Error')]
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit) and len(errors) == 1, result.output
    assert f'{fifo}: not a regular file (a FIFO); give a file' in errors[0], result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def invoke_within(seconds, command, argv, fifo):
    """CliRunner's result of `command` on argv, run on a thread; a run still waiting after `seconds` fails the test,
    after a writer that opens and closes `fifo` lets its read end (a reader blocked in open() gets end of file)."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=CliRunner().invoke(command, argv)), daemon=True)
    thread.start()
    thread.join(seconds)
    waited = thread.is_alive()
    if waited:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
    assert not waited, f'{" ".join(argv)} waited {seconds} s for a writer of {fifo}'
    return box['result']
