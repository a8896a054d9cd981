"""Label Studio interop: a bank's pairs exported as tasks, judged by a scripted person, exported by "Label Studio" and
imported back as the judgements the script meant; malformed exports refused in one line naming the task."""

import json
import math
import os
import urllib.parse
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from eg3d_rlhf.data import label_studio as ls
from eg3d_rlhf.data import labeling
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.preferences import load_judgements
from tests.helpers.cli import digest, refused_in_one_line
from tests.helpers.label import fake_bank, ok
from tools import label_studio as tool

PAIRS = 20

#----------------------------------------------------------------------------
# A person in Label Studio, scripted: looks at the two pictures a task shows and prefers the redder one (fake_bank
# paints sample i with red 40 * i); every seventh task is a tie, another every seventh is skipped. Label Studio then
# writes its JSON export as its docs show it (labelstud.io/guide/task_format; a Pairwise result as its editor writes it).

def picture_path(url, root):
    """The file a task's local-files URL names under the document root."""
    assert url.startswith(ls.LOCAL_FILES), url
    return os.path.join(root, urllib.parse.unquote(url[len(ls.LOCAL_FILES):]))


def redness(path):
    return int(np.asarray(PIL.Image.open(path).convert('RGB'))[..., 0].mean())


def scripted_choice(k, task, root):
    """'left', 'right', 'tie' or 'skip' for the k-th task, from what its pictures show."""
    if k % 7 == 3:
        return 'tie'
    if k % 7 == 5:
        return 'skip'
    left, right = (redness(picture_path(task['data'][side], root)) for side in ('left', 'right'))
    return 'left' if left > right else 'right'


def person(k):
    """Label Studio's completed_by as its export writes it: a user id, or the user object with an email."""
    return dict(id=3, email='alice@lab.org', first_name='Alice') if k % 2 == 0 else 12


def label_studio_export(tasks, root):
    """What Label Studio's JSON export holds once the scripted person judged every task."""
    exported = []
    for k, task in enumerate(tasks):
        choice = scripted_choice(k, task, root)
        result = {'left': [dict(id=f'r{k}', from_name=ls.PAIRWISE, to_name=ls.PAIRWISE, type='pairwise',
                                value=dict(selected='left'))],
                  'right': [dict(id=f'r{k}', from_name=ls.PAIRWISE, to_name=ls.PAIRWISE, type='pairwise',
                                 value=dict(selected='right'))],
                  'tie': [dict(id=f't{k}', from_name=ls.TIE, to_name='left', type='choices', value=dict(choices=[ls.TIE]))],
                  'skip': []}[choice]
        annotation = dict(id=1000 + k, completed_by=person(k), result=result, was_cancelled=choice == 'skip',
            ground_truth=False, created_at=f'2026-03-09T21:{k:02d}:49.513742Z', updated_at=f'2026-03-09T21:{k:02d}:50Z',
            lead_time=round(1.5 + k * 0.25, 3), result_count=0, task=k + 1)
        exported.append(dict(id=k + 1, data=dict(task['data']), annotations=[annotation], predictions=[], project=83,
            created_at='2026-03-09T20:00:00Z', updated_at='2026-03-09T22:00:00Z'))
    return exported


def intended(bank, root):
    """(a, b, choice, annotator) the script meant, from the pair order of `label.py serve` and the pictures."""
    pairs = list(zip(range(PAIRS), labeling.random_pairs(bank.ids, np.random.RandomState(0))))
    red = {x: redness(bank.path(x, 'preview_front.png')) for x in bank.ids}
    name = lambda k: 'alice@lab.org' if k % 2 == 0 else 'ls-user-12'
    choice = lambda k, a, b: {3: 'tie', 5: 'skip'}.get(k % 7, 'a' if red[a] > red[b] else 'b')
    return sorted((a, b, choice(k, a, b), name(k)) for k, (a, b) in pairs)


@pytest.fixture()
def exported(tmp_path):
    """(bank folder, tasks.json's tasks, the export Label Studio wrote after the script judged them)."""
    bank_dir = fake_bank(tmp_path / 'bank', count=7)                    # 21 pairs.
    ok(CliRunner().invoke(tool.main, ['export', '--bank', bank_dir, '--outdir', str(tmp_path / 'ls'), '--pairs',
        str(PAIRS), '--document-root', str(tmp_path)]))
    tasks = json.loads((tmp_path / 'ls' / 'tasks.json').read_text())
    path = tmp_path / 'export.json'
    path.write_text(json.dumps(label_studio_export(tasks, str(tmp_path))))
    return bank_dir, tasks, path

#----------------------------------------------------------------------------

def test_export_then_import_gives_the_scripted_judgements(tmp_path, exported):
    bank_dir, tasks, path = exported
    bank = Bank(bank_dir)
    assert len(tasks) == PAIRS and (tmp_path / 'ls' / 'config.xml').read_text() == ls.CONFIG
    for task in tasks:                                  # Each picture is the preview of the id the task carries.
        for side in ('left', 'right'):
            assert os.path.samefile(picture_path(task['data'][side], str(tmp_path)),
                bank.path(task['data'][f'{side}_id'], 'preview_front.png'))
    out = tmp_path / 'studio.jsonl'
    result = ok(CliRunner().invoke(tool.main, ['import', '--export', str(path), '--bank', bank_dir, '--out', str(out)]))
    assert f'wrote {PAIRS} judgements by 2 annotator(s)' in result.output
    judgements = load_judgements(out, known_ids=bank.ids)
    got = sorted((j.a, j.b, j.choice, j.annotator) for j in judgements)
    want = intended(bank, str(tmp_path))
    assert got == want
    assert {c for _a, _b, c, _n in want} == {'a', 'b', 'tie', 'skip'}
    by_task = {j.extra['ls_task']: j for j in judgements}
    assert math.isclose(by_task[3].extra['lead_time'], 2.0)
    assert by_task[3].time == '2026-03-09T21:02:49.513742Z' and by_task[3].extra['ls_annotation'] == 1002


def test_url_prefix_and_views(tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank', count=4)
    ok(CliRunner().invoke(tool.main, ['export', '--bank', bank_dir, '--outdir', str(tmp_path / 'ls'), '--view', 'image',
        '--url-prefix', 'http://127.0.0.1:8000/']))
    tasks = json.loads((tmp_path / 'ls' / 'tasks.json').read_text())
    assert len(tasks) == 6 and tasks[0]['data']['left'] == f'http://127.0.0.1:8000/{tasks[0]["data"]["left_id"]}/image.png'
    result = CliRunner().invoke(tool.main, ['export', '--bank', bank_dir, '--outdir', str(tmp_path / 'ls2'),
        '--document-root', str(tmp_path / 'elsewhere')])
    refused_in_one_line(result, 'is not under the document root')
    assert not os.path.exists(tmp_path / 'ls2')


def break_first_data(tasks):
    del tasks[4]['data']['right_id']

def break_selection(tasks):
    tasks[4]['annotations'][0]['result'] = [dict(from_name=ls.PAIRWISE, to_name=ls.PAIRWISE, type='pairwise',
        value=dict(selected='middle'))]
    tasks[4]['annotations'][0]['was_cancelled'] = False

def set_lead_time(value):
    def change(tasks):
        tasks[4]['annotations'][0]['lead_time'] = value
    return change

def unknown_id(tasks):
    tasks[4]['data']['left_id'] = 'seed000099'                         # Unfinished in the bank: no meta.json.

def set_id(value, annotation=False):
    def change(tasks):
        (tasks[4]['annotations'][0] if annotation else tasks[4])['id'] = value
    return change


@pytest.mark.parametrize('breaks, message', [
    (lambda tasks: dict(tasks=tasks), 'expected a list of tasks'),
    (break_first_data, 'task 5 (index 4): no "data" with "left_id" and "right_id"'),
    (break_selection, "task 5 (index 4), annotation 0: unknown pairwise selection 'middle'"),
    (set_lead_time(float('nan')), 'task 5 (index 4), annotation 0: "lead_time" must be a finite number'),
    (set_lead_time(-1.0), 'task 5 (index 4), annotation 0: "lead_time" must be a finite number'),
    (unknown_id, "task 5 (index 4): sample id 'seed000099' is not in the bank"),
    (set_id(float('nan')), 'task ? (index 4): "id" must be an integer id, got nan'),    # Before: "ls_task": NaN.
    (set_id(float('inf')), 'task ? (index 4): "id" must be an integer id, got inf'),
    (set_id(4.5), 'task ? (index 4): "id" must be an integer id, got 4.5'),
    (set_id(True), 'task ? (index 4): "id" must be an integer id, got True'),
    (set_id([5]), 'task ? (index 4): "id" must be an integer id, got [5]'),
    (set_id(float('nan'), annotation=True), 'task 5 (index 4), annotation 0: "id" must be an integer id, got nan'),
], ids=['not-a-list', 'no-ids', 'selection', 'nan-lead-time', 'negative-lead-time', 'unknown-id', 'nan-task-id',
    'inf-task-id', 'fraction-task-id', 'bool-task-id', 'list-task-id', 'nan-annotation-id'])
def test_malformed_exports_fail_in_one_line_naming_the_task(tmp_path, exported, breaks, message):
    bank_dir, _tasks, path = exported
    tasks = json.loads(path.read_text())
    path.write_text(json.dumps(breaks(tasks) or tasks))
    out = tmp_path / 'studio.jsonl'
    result = CliRunner().invoke(tool.main, ['import', '--export', str(path), '--bank', bank_dir, '--out', str(out)])
    refused_in_one_line(result, message)
    assert str(path) in result.output and not out.exists()


def test_a_whole_float_task_id_is_kept_as_an_integer(tmp_path, exported):
    bank_dir, _tasks, path = exported
    tasks = json.loads(path.read_text())
    tasks[4]['id'], tasks[4]['annotations'][0]['id'] = 5.0, 1004.0
    path.write_text(json.dumps(tasks))
    out = tmp_path / 'studio.jsonl'
    ok(CliRunner().invoke(tool.main, ['import', '--export', str(path), '--bank', bank_dir, '--out', str(out)]))
    [line] = [line for line in out.read_text().splitlines() if '"ls_task": 5,' in line]     # Before: 5.0.
    assert json.loads(line)['ls_annotation'] == 1004 and '1004.0' not in line


def test_import_never_writes_over_its_export_or_the_bank_force_or_not(tmp_path, exported):
    bank_dir, _tasks, path = exported
    os.symlink(path, tmp_path / 'link.jsonl')
    meta = os.path.join(bank_dir, 'seed000001', 'meta.json')
    before = {p: digest(Path(p)) for p in (path, meta)}
    run = lambda out, *force: CliRunner().invoke(tool.main, ['import', '--export', str(path), '--bank', bank_dir,
        '--out', str(out), *force])
    for out, flag, source in ((path, '--export', path), (tmp_path / 'link.jsonl', '--export', path),
            (tmp_path / 'ls' / '..' / 'export.json', '--export', path), (meta, '--bank', bank_dir)):
        for force in ([], ['--force']):                                 # Before: --force replaced them.
            refused_in_one_line(run(out, *force), f'{out} would write over {flag} {source}, which this command reads')
    assert {p: digest(Path(p)) for p in (path, meta)} == before and os.path.islink(tmp_path / 'link.jsonl')


def test_refuses_to_overwrite_without_force(tmp_path, exported):
    bank_dir, _tasks, path = exported
    out = tmp_path / 'studio.jsonl'
    out.write_text('{"people": "labels that cannot be redone"}\n')
    before = digest(out)
    args = ['import', '--export', str(path), '--bank', bank_dir, '--out', str(out)]
    refused_in_one_line(CliRunner().invoke(tool.main, args), 'exists; pass --force')
    assert digest(out) == before
    refused_in_one_line(CliRunner().invoke(tool.main, ['export', '--bank', bank_dir, '--outdir', str(tmp_path / 'ls')]),
        'exists; pass --force')
    ok(CliRunner().invoke(tool.main, args + ['--force']))
    assert len(load_judgements(out)) == PAIRS


def test_the_config_is_valid_for_label_studio_sdk(tmp_path, exported):
    sdk = pytest.importorskip('label_studio_sdk.label_interface', reason='label-studio-sdk is not installed (not a '
        'requirement: its opencv-python-headless 4.12 needs numpy<2.3, below ours; install it in another venv to run this)')
    bank_dir, tasks, _path = exported
    config = sdk.LabelInterface(ls.CONFIG)
    config.validate()                                   # Raises on a bad schema, a duplicate name or an unknown toName.
    assert [(c.tag, c.name, c.to_name) for c in config.controls] == [('Pairwise', ls.PAIRWISE, ['left', 'right']),
        ('Choices', ls.TIE, ['left'])]
    assert all(config.validate_task(task) for task in tasks)
    assert config.validate_region(dict(from_name=ls.TIE, to_name='left', type='choices', value=dict(choices=[ls.TIE])))
    region = json.loads(config.get_control(ls.PAIRWISE).label('right').to_json())      # A Pairwise result by the SDK.
    path = tmp_path / 'sdk.json'
    path.write_text(json.dumps([dict(id=1, data=tasks[0]['data'], annotations=[dict(id=1, completed_by=5,
        created_at='2026-03-09T21:00:00Z', result=[region])])]))
    [j] = ls.import_export(str(path), Bank(bank_dir).ids)
    assert (j.a, j.b, j.choice, j.annotator) == (tasks[0]['data']['left_id'], tasks[0]['data']['right_id'], 'b', 'ls-user-5')
