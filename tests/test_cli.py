"""eg3d_rlhf/cli.py's checks as the tools use them: no output replaces a file the same command reads, --force or not,
however its path is spelled (the file, a link to it, its path through another folder, a hard link); numbers and seeds in
range, outputs that can be written, inputs that are regular files, and a --network file loaded as it was checked."""

import importlib
import os
import stat
import threading

import pytest
from click.testing import CliRunner

from eg3d_rlhf.synthetic import demo
from tests.helpers.cli import digest, refused_in_one_line, sentinel

#----------------------------------------------------------------------------
# (tool, arguments with {input} and {out}, the flag that names the input). Each refuses before it reads the input,
# so any file stands for it; tools whose check needs a real bank or network are tested beside them.

READERS = [
    ('convert_reward', ['--reward-model', '{input}', '--out', '{out}'], '--reward-model'),
    ('bundle_checkpoint', ['--snapshot', '{input}', '--trust-pickle', '--out', '{out}'], '--snapshot'),
    ('make_dataset', ['grid', '--data', '{input}', '--out', '{out}'], '--data'),
    ('train_reward', ['--bank', 'no-bank', '--labels', '{input}', '--out', '{out}'], '--labels'),
]


def spellings(path):
    """Other names of the file `path`: a symbolic link, its path through a sibling folder, a hard link."""
    folder = path.parent
    (folder / 'sub').mkdir()
    os.symlink(path, folder / 'link')
    os.link(path, folder / 'hard')
    return [path, folder / 'link', folder / 'sub' / '..' / path.name, folder / 'hard']


@pytest.mark.parametrize('tool, args, flag', READERS, ids=[t for t, _, _ in READERS])
def test_an_output_never_replaces_the_file_its_command_reads(tmp_path, tool, args, flag):
    main = importlib.import_module(f'tools.{tool}').main
    source = tmp_path / 'input.bin'
    source.write_bytes(b'what the user keeps: a checkpoint, a bundle, a dataset, labels')
    before = digest(source)
    for out in spellings(source):
        for force in ([], ['--force']):                                 # Before: --force replaced it.
            result = CliRunner().invoke(main, [a.format(input=source, out=out) for a in args] + force)
            refused_in_one_line(result, f'{out} would write over {flag} {source}, which this command reads')
    assert digest(source) == before and sorted(os.listdir(tmp_path)) == ['hard', 'input.bin', 'link', 'sub']


def test_an_output_inside_a_folder_the_command_reads_is_refused(tmp_path):
    from tools import annotate
    meta = tmp_path / 'bank' / 'seed000000' / 'meta.json'
    meta.parent.mkdir(parents=True)
    meta.write_text('{"id": "seed000000"}\n')
    for force in ([], ['--force']):                                     # Before: --force replaced the bank's file.
        result = CliRunner().invoke(annotate.main, ['good-bad', '--bank', str(tmp_path / 'bank'), '--annotator',
            'oracle:nose', '--good', str(meta), '--bad', str(tmp_path / 'bad.txt'), *force])
        refused_in_one_line(result, f'{meta} would write over --bank {tmp_path / "bank"}, which this command reads')
    assert meta.read_text() == '{"id": "seed000000"}\n' and not (tmp_path / 'bad.txt').exists()

#----------------------------------------------------------------------------
# Numbers: nan and inf are refused wherever a number is expected.

def tool_main(tool):
    """The click command of train.py or tools/<name>.py (their __main__ only calls it)."""
    return importlib.import_module('train' if tool == 'train.py' else 'tools.' + os.path.basename(tool)[:-3]).main


@pytest.mark.usefixtures('one_thread')
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
# Seeds numpy cannot take, or more seeds than memory holds.

@pytest.mark.usefixtures('one_thread')
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


@pytest.mark.usefixtures('one_thread')
@pytest.mark.parametrize('tool, sub, flag, kind', OUTPUT_FLAGS, ids=[f'{t} {f}' for t, _, f, _ in OUTPUT_FLAGS])
def test_an_output_under_a_file_is_refused_before_any_work(tool, sub, flag, kind, tmp_path):
    blocker = tmp_path / 'notes.txt'
    blocker.write_text('a file where a folder would have to be')
    before = digest(blocker)
    result = CliRunner().invoke(tool_main(tool), sub + [flag, str(blocker / 'out' / 'x')])
    assert result.exit_code == 2 and f"Invalid value for '{flag}'" in result.output, result.output
    assert f'{blocker} is a file, so nothing can be made under it; choose another' in result.output
    assert 'Traceback' not in result.output and digest(blocker) == before and os.listdir(tmp_path) == ['notes.txt']


@pytest.mark.usefixtures('one_thread')
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


@pytest.mark.usefixtures('one_thread')
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

#----------------------------------------------------------------------------
# Code runs only with consent: a --network file swapped after its check loads what was checked.

def evil_pickle(marker):
    """A pickle (protocol 4: it looks like an EG3D network pickle) whose loading writes `marker`."""
    import pickle

    class Evil:
        def __reduce__(self):
            return exec, (f'open({str(marker)!r}, "w").write("code ran")',)
    return pickle.dumps(Evil(), protocol=4)


@pytest.mark.usefixtures('one_thread')
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


def float_flags(command, path=()):
    """(command path, option name, its type) of every float option of a click command and its subcommands."""
    import click
    for sub_name, sub in getattr(command, 'commands', {}).items():
        yield from float_flags(sub, path + (sub_name,))
    for p in command.params:
        if isinstance(p.type, click.types.FloatParamType):
            yield ' '.join(path), p.opts[-1], p.type


def test_every_float_flag_of_every_tool_refuses_nan_and_inf():
    """click's float types let nan and inf through; a tool's float flag is a FiniteRange (or label_pages.Rate)."""
    from eg3d_rlhf.cli import FiniteRange
    from eg3d_rlhf.data.label_pages import Rate
    names = sorted(n[:-3] for n in os.listdir(os.path.join(demo.ROOT, 'tools')) if n.endswith('.py') and n != '__init__.py')
    found, loose = 0, []
    for name in names:
        main = getattr(importlib.import_module(f'tools.{name}'), 'main', None)
        for command, flag, kind in float_flags(main) if hasattr(main, 'params') else ():
            found += 1
            if not isinstance(kind, (FiniteRange, Rate)):
                loose.append(f'{name} {command} {flag}'.replace('  ', ' '))
    assert found > 20 and not loose, loose
