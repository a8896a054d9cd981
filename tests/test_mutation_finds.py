"""One case per failure the widened mutation run (tests/test_mutations.py, issue 31) found, each failing before its fix."""

import os
import pickle
import pickletools

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import train
from eg3d_rlhf.analysis import tails
from eg3d_rlhf.data import preferences
from eg3d_rlhf.data.preferences import LabelError
from eg3d_rlhf.rewards import bundle
from eg3d_rlhf.rewards.bundle import BundleError
from tests.helpers.bundles import YAML, write_bundle
from tests.helpers.cli import refused_in_one_line
from tests.helpers.mutations import run_within
from tests.helpers.train import base_args
from training import legacy

pytestmark = pytest.mark.usefixtures('one_thread')

#----------------------------------------------------------------------------
# Sigma cubes (tails --cubes): checked against the file's size before anything is allocated, a regular file only,
# and the refusal on a line of its own after the progress bar.

def test_a_cube_npy_header_claiming_54_gib_is_refused_before_allocating(tmp_path):
    path = tmp_path / 'cube.npy'
    np.save(path, np.zeros((12, 12, 12), np.float32))
    data = path.read_bytes()
    path.write_bytes(data.replace(b'(12, 12, 12)', b'(2440, 2440, 2440)'))   # 2440^3 float32: 54 GiB.
    with pytest.raises(tails.CubeError, match=r'its header says \[2440, 2440, 2440\] float32 \(54.1 GiB\)'):
        tails.read_cube(str(path))                              # Before: MemoryError (or 54 GiB asked of the OS).


def test_a_fifo_given_as_a_cube_is_refused_not_waited_on(tmp_path):
    path = tmp_path / 'cube.mrc'
    os.mkfifo(path)
    with pytest.raises(tails.CubeError, match='not a regular file \\(a FIFO\\)'):
        run_within(10, lambda: tails.read_cube(str(path)))     # Before: Hang (mrcfile.open waited for a writer).


def test_tails_error_line_starts_a_line_of_its_own(tmp_path, balls):
    from eg3d_rlhf.data.bank import Bank
    from eg3d_rlhf.rewards.checkpoint import save_reward
    from tests.helpers.rewards import tiny_sigma
    from tools import tails as tails_tool
    save_reward(str(tmp_path / 'reward.pt'), tiny_sigma(seed=7).eval(), 'sigma', Bank(balls['bank']).meta('ball00')['slab'])
    np.save(tmp_path / 'good.npy', np.zeros((8, 8, 8), np.float32))
    np.save(tmp_path / 'bad.npy', np.full((8, 8, 8), np.nan, np.float32))
    result = CliRunner().invoke(tails_tool.main, ['--device', 'cpu', '--bank', balls['bank'], '--reward-model',
        str(tmp_path / 'reward.pt'), '--cubes', str(tmp_path / 'good.npy'), '--cubes', str(tmp_path / 'bad.npy'),
        '--outdir', str(tmp_path / 't'), '--dry-run'])
    refused_in_one_line(result, f'Error: {tmp_path / "bad.npy"}: 512 values are nan or inf')  # Before: after the bar's \r.

#----------------------------------------------------------------------------
# Resume snapshots (train.py --resume): damaged pickles, entries that are no networks, weights that are not finite.

def resume(data, tmp_path, snapshot_bytes):
    pkl = tmp_path / 'snapshot.pkl'
    pkl.write_bytes(snapshot_bytes)
    result = CliRunner().invoke(train.main, base_args(data, tmp_path / 'runs', '--resume', str(pkl), '--trust-pickle',
        '--kimg', '0.008', '--dry-run'))
    assert not (tmp_path / 'runs').exists()
    return result, pkl


def test_a_snapshot_entry_that_is_not_a_network_is_refused(data, start_pkl, tmp_path):
    snapshot = legacy.load_network_pkl(start_pkl, trust=True)
    snapshot['G'] = 3
    result, pkl = resume(data, tmp_path, pickle.dumps(snapshot))
    refused_in_one_line(result, f'{pkl}": its G is a int, not a network')     # Before: AssertionError.


def test_an_exabyte_length_in_a_snapshot_pickle_is_refused(data, start_pkl, tmp_path):
    raw = open(start_pkl, 'rb').read()
    pos = next(pos for op, _, pos in pickletools.genops(raw) if op.name == 'FRAME')
    raw = raw[:pos + 1] + (1 << 60).to_bytes(8, 'little') + raw[pos + 9:]     # A frame of an exabyte.
    result, pkl = resume(data, tmp_path, raw)
    refused_in_one_line(result, f'cannot unpickle "{pkl}": MemoryError')     # Before: the MemoryError's traceback.


def test_nan_weights_in_a_resume_snapshot_are_refused(data, start_pkl, tmp_path):
    snapshot = legacy.load_network_pkl(start_pkl, trust=True)
    name, param = next(iter(snapshot['G_ema'].named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float('nan')
    result, pkl = resume(data, tmp_path, pickle.dumps(snapshot))
    refused_in_one_line(result, f'{pkl}: G_ema.{name} holds nan or inf; the snapshot is damaged')   # Before: rc 0.

#----------------------------------------------------------------------------
# YAML (train.py --config, a bundle's run config) and JSON (every reader: dnnlib.util.decode_json).

def test_a_deeply_nested_config_file_is_refused(tmp_path):
    path = tmp_path / 'run.yaml'
    path.write_text('kimg: ' + '[' * 100000 + ']' * 100000 + '\n')
    result = CliRunner().invoke(train.main, ['--config', str(path), '--outdir', str(tmp_path / 'runs'), '--dry-run'])
    refused_in_one_line(result, f'--config: {path}: YAML nested too deeply')     # Before: RecursionError.


def test_a_bundle_run_config_naming_a_key_twice_is_refused(tmp_path):
    folder, _ = write_bundle(str(tmp_path), yaml_text=YAML.replace('    num_groups: 2\n', '    num_groups: 2\n' * 2, 1))
    with pytest.raises(BundleError, match="release_config.yaml: key 'num_groups' is given twice"):
        bundle.load_bundle(folder)                      # Before: the last one, silently.


@pytest.mark.parametrize('reader', ['read_json_object', 'load_judgements'])
def test_a_json_number_of_5000_digits_is_refused(tmp_path, reader):
    path = tmp_path / 'f.json'
    path.write_text('{"a": "seed000001", "b": "seed000002", "choice": "a", "n": ' + '9' * 5000 + '}\n')
    read = dnnlib.util.read_json_object if reader == 'read_json_object' else preferences.load_judgements
    with pytest.raises(ValueError, match='JSON holds a number of more than 4300 digits') as err:
        read(str(path))                                 # Before: ValueError of int(), no file named.
    assert str(err.value).startswith(str(path))


@pytest.mark.parametrize('edit, message', [
    (('f_maps: [4, 8]', 'f_maps: [1000000000000, 8]'), 'its model cannot be built'),         # Before: 4 TB asked for.
    (('num_groups: 2', 'num_groups: 2\n    1: x\n    wings: 3'), 'model.Conv3DModule has a key that is not text (1)'),
])
def test_reward_config_fields_of_the_wrong_kind_are_refused(tmp_path, edit, message):
    folder, _ = write_bundle(str(tmp_path), yaml_text=YAML.replace(*edit, 1))
    with pytest.raises(BundleError, match=message.replace('(', '\\(').replace(')', '\\)')):
        bundle.load_bundle(folder)                      # Before: RuntimeError, TypeError of sorted().

#----------------------------------------------------------------------------
# Id lists and ranked seeds: other scripts' digits are no seed. Rewards: a bundle folder's weights sized before they are
# read, a checkpoint's input contract complete.

@pytest.mark.parametrize('name, text', [('good.txt', '\u0663\n'), ('ranked.csv', ',rank1,rank2\n0,\u0663,5\n'),
    ('ranking.jsonl', '{"condition": "nose", "ranking": ["\u0663", "5"]}\n')])
def test_arabic_indic_digits_are_not_read_as_seeds(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding='utf-8')
    read = {'good.txt': preferences.read_id_list, 'ranked.csv': preferences.import_ranked_csv,
        'ranking.jsonl': preferences.import_ranking}[name]
    with pytest.raises(LabelError, match=f'{path}:[12]: '):
        read(str(path))                                 # Before: seed000003.


def test_a_bundle_folders_weights_are_sized_before_they_are_read(tmp_path, monkeypatch):
    folder, _ = write_bundle(str(tmp_path))
    monkeypatch.setattr(bundle, 'MAX_WEIGHTS_BYTES', 1 << 20)
    weights = os.path.join(folder, 'best_model.pt')
    os.truncate(weights, 3 << 20)                       # Sparse: as a 40 GiB one would be, at test size.
    with pytest.raises(BundleError, match='best_model.pt: 3 MiB, larger than 1 MiB; not a released reward'):
        bundle.load_bundle(folder)                      # Before: read whole, then "not a readable torch file".


def test_a_reward_checkpoint_whose_input_lacks_its_slab_is_refused(tmp_path, reward_checkpoint):
    from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, load_reward
    data = torch.load(reward_checkpoint, weights_only=True)
    del data['input']['slab']
    torch.save(data, tmp_path / 'no-slab.pt')
    with pytest.raises(RewardCheckpointError, match="no-slab.pt: input field 'slab' is missing"):
        load_reward(str(tmp_path / 'no-slab.pt'))       # Before: TypeError of InputSpec.__init__.

#----------------------------------------------------------------------------
#----------------------------------------------------------------------------
# Flow checkpoints (sample_bank, evaluate, guide, train.py --generator=flow): a config whose sampler is not a string.

@pytest.mark.parametrize('sampler', [{'a': 1}, ['heun']])
def test_a_flow_config_whose_sampler_is_not_a_name_is_refused_in_one_line(tmp_path, sampler):
    from eg3d_rlhf.generators import flow_heads
    from tests.helpers.flow import TINY
    from tools import sample_bank
    path = str(tmp_path / 'flow.pt')
    flow_heads.save_flow(path, flow_heads.build_pipeline(TINY, init_seed=0), TINY)
    state = torch.load(path, weights_only=True)
    state['config']['sampler'] = sampler
    torch.save(state, path)
    result = CliRunner().invoke(sample_bank.main, ['--network', path, '--seeds', '0', '--res', '16', '--device', 'cpu',
        '--outdir', str(tmp_path / 'b')])                       # Before: TypeError: unhashable type (a dict, a list).
    refused_in_one_line(result, f'{path}: bad flow config (unknown sampler a {type(sampler).__name__}; use one of')
    assert not (tmp_path / 'b').exists()

#----------------------------------------------------------------------------
# train.py --generator=flow: --bank and --labels checked before the run folder is made (and by --dry-run).

@pytest.mark.parametrize('labels, message', [
    ('not json\n', 'labels.jsonl:1: not JSON'),
    ('{"a": "ball00", "b": "ball09", "choice": "a", "annotator": "me", "time": "2026-11-25T00:00:00"}\n',
        'labels.jsonl:1: unknown sample id ball09'),
    ('{"a": "ball00", "b": "ball01", "choice": "a", "annotator": "me", "time": "2026-11-25T00:00:00"}\n',
        'ball00/asset.npz: no such file; redraw the sample'),
])
@pytest.mark.parametrize('dry_run', [[], ['--dry-run']])
def test_train_py_flow_refuses_bad_bank_or_labels_before_its_run_folder(tmp_path, labels, message, dry_run):
    from eg3d_rlhf.generators import flow_heads
    from tests.helpers.banks import ball_bank
    from tests.helpers.flow import TINY
    bank, _ = ball_bank(tmp_path / 'bank', 2, seed=0)
    flow_heads.save_flow(str(tmp_path / 'flow.pt'), flow_heads.build_pipeline(TINY, init_seed=0), TINY)
    (tmp_path / 'labels.jsonl').write_text(labels, encoding='utf-8')
    result = CliRunner().invoke(train.main, ['--generator=flow', '--resume', str(tmp_path / 'flow.pt'), '--bank', bank,
        '--labels', str(tmp_path / 'labels.jsonl'), '--outdir', str(tmp_path / 'runs'), '--device', 'cpu', *dry_run])
    refused_in_one_line(result, message)                # Before: a dry run passed; a run left options.json and log.txt.
    assert not (tmp_path / 'runs').exists()
