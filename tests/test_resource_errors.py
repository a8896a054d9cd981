"""A full disk, a read-only file system or a forbidden folder where a tool writes: one line naming the path, nothing left."""

import errno
import os

import pytest
from click.testing import CliRunner

from tests.helpers.cli import digest, refused_in_one_line
from tests.helpers.disk import broken_disk, chmod_stops_writes

pytestmark = pytest.mark.usefixtures('one_thread')

CODES = {'ENOSPC': errno.ENOSPC, 'EROFS': errno.EROFS, 'EACCES': errno.EACCES}
CAUSES = {'ENOSPC': 'no space left on the device', 'EROFS': 'read-only file system', 'EACCES': 'permission denied'}


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    """A bank of six balls, its judgements, a sigma reward of its slab and a tiny EG3D pickle, outside any output."""
    from eg3d_rlhf.data import annotators, preferences
    from eg3d_rlhf.data.bank import Bank
    from eg3d_rlhf.rewards.checkpoint import save_reward
    from tests.helpers.banks import ball_bank
    from tests.helpers.eg3d import tiny_generator
    from tests.helpers.rewards import tiny_sigma
    from training import legacy
    root = tmp_path_factory.mktemp('inputs')
    bank, radii = ball_bank(root / 'bank', 6, seed=3)
    oracle = annotators.OracleAnnotator('nose', radii, temperature=0, seed=0)
    preferences.write_judgements(str(root / 'labels.jsonl'), oracle.judgements(oracle.draw_pairs(radii, 12)))
    save_reward(str(root / 'reward.pt'), tiny_sigma(seed=7).eval(), 'sigma', Bank(bank).meta('ball00')['slab'])
    G = tiny_generator().eval()
    legacy.save_network_pkl(str(root / 'tiny.pkl'), dict(G=G, G_ema=G, D=None, augment_pipe=None, training_set_kwargs=None))
    return dict(bank=bank, labels=str(root / 'labels.jsonl'), reward=str(root / 'reward.pt'), pkl=str(root / 'tiny.pkl'))


def command(tool, inputs, out):
    """(click command, argv, path its error must name) of `tool` writing under the folder `out`."""
    from tools import (annotate, attribute, embed, evaluate, extract_sigma, generator_demo, label, sample_bank,
        score_bank, tails, train_flow, train_reward)
    bank, o, pkl = inputs['bank'], str(out), inputs['pkl']
    return {
        'annotate pairs': (annotate.main, ['pairs', '--bank', bank, '--annotator', 'oracle:nose', '--pairs', '5', '--out',
            f'{o}/labels.jsonl', '--scores-out', f'{o}/scores.csv'], f'{o}/labels.jsonl'),
        'annotate good-bad': (annotate.main, ['good-bad', '--bank', bank, '--annotator', 'oracle:nose', '--good',
            f'{o}/good.txt', '--bad', f'{o}/bad.txt'], f'{o}/good.txt'),
        'score_bank': (score_bank.main, ['--device', 'cpu', '--bank', bank, '--reward-model', inputs['reward'], '--out',
            f'{o}/scores.csv'], f'{o}/scores.csv'),
        'sample_bank': (sample_bank.main, ['--network', inputs['pkl'], '--trust-pickle', '--seeds', '0-1', '--res', '16',
            '--preview-res', '16', '--device', 'cpu', '--outdir', f'{o}/bank'], f'{o}/bank'),
        'label stats': (label.main, ['stats', inputs['labels'], '--json', f'{o}/stats.json'], f'{o}/stats.json'),
        'train_reward': (train_reward.main, ['--device', 'cpu', '--bank', bank, '--labels', inputs['labels'], '--epochs',
            '1', '--split', '0.5,0.25,0.25', '--out', f'{o}/reward.pt'], f'{o}/reward'),
        'extract_sigma': (extract_sigma.main, ['--network', inputs['pkl'], '--trust-pickle', '--seeds', '0', '--res', '16',
            '--device', 'cpu', '--outdir', f'{o}/sigma'], f'{o}/sigma'),
        'tails': (tails.main, ['--device', 'cpu', '--bank', bank, '--reward-model', inputs['reward'], '--preview-res',
            '16', '--outdir', f'{o}/tails'], f'{o}/tails'),
        'embed': (embed.main, ['--device', 'cpu', '--bank', bank, '--reward-model', inputs['reward'], '--outdir',
            f'{o}/embed'], f'{o}/embed'),
        'attribute': (attribute.main, ['--device', 'cpu', '--bank', bank, '--reward-model', inputs['reward'], '--limit',
            '2', '--permutations', '1', '--ig-steps', '2', '--meshes', '1', '--outdir', f'{o}/attr'], f'{o}/attr'),
        'evaluate': (evaluate.main, ['--device', 'cpu', '--original', pkl, '--tuned', pkl, '--trust-pickle',
            '--reward-model', inputs['reward'], '--seeds', '0-1', '--annotator', 'oracle:nose', '--res', '16',
            '--view-samples', '0', '--outdir', f'{o}/report'], f'{o}/report'),
        'train_flow': (train_flow.main, ['--outdir', f'{o}/run', '--preset', 'tiny', '--batch', '2', '--snap', '2',
            '--device', 'cpu', '--preview', '0', '--steps', '2'], f'{o}/run'),
        'generator_demo': (generator_demo.main, ['--outdir', f'{o}/demo', '--network', 'random', '--res', '16',
            '--neural-res', '16'], f'{o}/demo'),
    }[tool]

TOOLS = ['annotate pairs', 'annotate good-bad', 'score_bank', 'sample_bank', 'label stats', 'train_reward',
    'extract_sigma', 'tails', 'attribute', 'evaluate', 'train_flow', 'generator_demo']
EVERY = TOOLS + [pytest.param('embed', marks=pytest.mark.slow)]   # embed's first run costs UMAP's ~25 s JIT.


def files_under(folder):
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob('*')) if p.is_file()}

#----------------------------------------------------------------------------

@pytest.mark.parametrize('code', list(CODES))
@pytest.mark.parametrize('tool', EVERY)
def test_a_write_that_fails_names_the_path_in_one_line_and_leaves_nothing(inputs, tiny_models, tmp_path, monkeypatch,
        tool, code):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'notes.txt').write_text('work that must survive a failed write\n')
    before = files_under(out)
    main, argv, named = command(tool, inputs, out)
    broken_disk(monkeypatch, out, CODES[code])
    result = CliRunner().invoke(main, argv)
    monkeypatch.undo()
    refused_in_one_line(result, named)                  # Before: a traceback (OSError), and partial files.
    assert CAUSES[code] in result.output, result.output
    assert files_under(out) == before and sorted(os.listdir(out)) == ['notes.txt'], sorted(out.rglob('*'))


@pytest.mark.parametrize('tool', EVERY)
def test_a_read_only_folder_is_refused_before_any_work(inputs, tiny_models, tmp_path, tool):
    out = tmp_path / 'out'
    out.mkdir()
    if not chmod_stops_writes(out):
        pytest.skip('chmod 0o555 does not stop writes here (root, or a file system without modes); '
            'test_a_write_that_fails_names_the_path_in_one_line_and_leaves_nothing simulates EACCES instead')
    main, argv, _ = command(tool, inputs, out)
    os.chmod(out, 0o555)
    try:
        result = CliRunner().invoke(main, argv)
    finally:
        os.chmod(out, 0o755)
    refused_in_one_line(result, f'cannot write in {out} (permission denied)')
    assert os.listdir(out) == []

#----------------------------------------------------------------------------
# The label server's judgements file: a judgement the disk refuses is answered 'not saved' naming the file, which keeps
# no part of it; the next one, once there is room, is saved whole.

@pytest.mark.parametrize('code', list(CODES))
def test_the_label_server_says_not_saved_naming_its_file_and_keeps_no_part_of_it(tmp_path, monkeypatch, code):
    import json
    from eg3d_rlhf.data import preferences
    from tests.helpers.label import Running, fake_bank, judge, request
    bank_dir = fake_bank(tmp_path / 'bank')
    (tmp_path / 'work').mkdir()
    out = tmp_path / 'work' / 'labels.jsonl'
    with Running(bank_dir, out, target=3) as server:
        state = judge(server.port, json.loads(request(server.port, 'GET', '/api/state')[1]), 'a')
        before = digest(out)
        broken_disk(monkeypatch, tmp_path / 'work', CODES[code])
        status, body = request(server.port, 'POST', '/api/judge', dict(a=state['current']['a'], b=state['current']['b'],
            choice='b'))
        monkeypatch.undo()
        error = json.loads(body)['error']
        assert status == 500 and str(out) in error, body                # Before: ENOSPC without the file's name,
        assert CAUSES[code].split()[0] in error.lower(), body
        assert digest(out) == before                                    # and half a line left in it.
        judge(server.port, state, 'b')                                       # The same pair again, now saved.
    assert [j.choice for j in preferences.load_judgements(str(out))] == ['a', 'b']

#----------------------------------------------------------------------------
# A failure after some outputs were written: those go too (or, in a bank, only the unfinished sample).

def test_annotate_removes_its_judgements_when_the_scores_cannot_be_written(inputs, tmp_path, monkeypatch):
    from tools import annotate
    (tmp_path / 'full').mkdir()
    broken_disk(monkeypatch, tmp_path / 'full', errno.ENOSPC)
    result = CliRunner().invoke(annotate.main, ['pairs', '--bank', inputs['bank'], '--annotator', 'oracle:nose', '--pairs',
        '5', '--out', str(tmp_path / 'labels.jsonl'), '--scores-out', str(tmp_path / 'full' / 'scores.csv')])
    monkeypatch.undo()
    refused_in_one_line(result, f'{tmp_path / "full" / "scores.csv"}: cannot write it (no space left on the device')
    assert sorted(os.listdir(tmp_path)) == ['full'] and os.listdir(tmp_path / 'full') == []   # Before: labels.jsonl.


def test_train_reward_removes_its_checkpoint_when_its_report_cannot_be_written(inputs, tiny_models, tmp_path,
        monkeypatch):
    import dnnlib
    from eg3d_rlhf.analysis import reward_fit

    def full_disk(out, summary, records):               # The checkpoint and the log are written; then the disk fills.
        assert os.path.isfile(out)
        with dnnlib.util.atomic_write(out[:-3] + '.report.json', 'w'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(reward_fit, 'report', full_disk)
    main, argv, _ = command('train_reward', inputs, tmp_path)
    result = CliRunner().invoke(main, argv + ['--report-to', 'none'])
    refused_in_one_line(result, f'{tmp_path / "reward.report.json"}: cannot write it (no space left on the device')
    assert os.listdir(tmp_path) == []                   # Before: reward.pt and reward.metrics.jsonl stayed.


def test_sample_bank_keeps_finished_samples_and_drops_the_one_cut_short(inputs, tmp_path, monkeypatch):
    from eg3d_rlhf.data.bank import Bank
    main, argv, _ = command('sample_bank', inputs, tmp_path)
    broken_disk(monkeypatch, tmp_path / 'bank' / 'seed000001', errno.ENOSPC)
    result = CliRunner().invoke(main, argv)
    monkeypatch.undo()
    refused_in_one_line(result, f'{tmp_path / "bank" / "seed000001"}/')
    assert sorted(os.listdir(tmp_path / 'bank')) == ['bank.json', 'seed000000']     # Before: a half-written seed000001.
    assert Bank(str(tmp_path / 'bank')).ids == ['seed000000']
    assert CliRunner().invoke(main, argv).exit_code == 0 and Bank(str(tmp_path / 'bank')).ids == ['seed000000',
        'seed000001']                                   # A rerun with space finishes the bank.

#----------------------------------------------------------------------------


def test_train_flow_keeps_its_run_when_the_disk_fills_after_a_snapshot(tmp_path, monkeypatch):
    from tools import train_flow
    real = train_flow.snapshot

    def snapshot(outdir, *args):                        # The first snapshot is written; then the disk fills.
        if args[3] == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(outdir, 'flow-000004.pt'))
        return real(outdir, *args)
    monkeypatch.setattr(train_flow, 'snapshot', snapshot)
    run = tmp_path / 'run'
    result = CliRunner().invoke(train_flow.main, ['--outdir', str(run), '--preset', 'tiny', '--batch', '2', '--snap', '2',
        '--device', 'cpu', '--preview', '0', '--steps', '4'])
    refused_in_one_line(result, f'{run / "flow-000004.pt"}: cannot write it (no space left on the device')
    assert {'options.json', 'stats.jsonl', 'flow-000002.pt'} <= set(os.listdir(run))   # Kept: --resume continues it.
