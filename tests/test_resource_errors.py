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
    from tools import annotate, embed, extract_sigma, label, sample_bank, score_bank, tails, train_reward
    bank, o = inputs['bank'], str(out)
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
    }[tool]

TOOLS = ['annotate pairs', 'annotate good-bad', 'score_bank', 'sample_bank', 'label stats', 'train_reward',
    'extract_sigma', 'tails']          # embed: as tails (cli.all_or_nothing), but its first run costs UMAP's ~25 s JIT.


def files_under(folder):
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob('*')) if p.is_file()}

#----------------------------------------------------------------------------

@pytest.mark.parametrize('code', list(CODES))
@pytest.mark.parametrize('tool', TOOLS)
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


@pytest.mark.parametrize('tool', TOOLS)
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
