"""eg3d_rlhf/cli.py's refuse_overwrite as the tools use it: no output replaces a file the same command reads, --force or
not, however its path is spelled (the file, a link to it, its path through another folder, a hard link)."""

import importlib
import os

import pytest
from click.testing import CliRunner

from tests.helpers.cli import digest, refused_in_one_line

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
