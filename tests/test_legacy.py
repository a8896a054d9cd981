"""training.legacy: the trust gate, clear errors, atomic snapshots, and rebuilding with this project's classes."""

import io
import os
import pickle

import pytest
import torch

from tools.generator_demo import ffhq512_small_kwargs
from torch_utils import persistence
from training import legacy
from training.triplane import TriPlaneGenerator


@pytest.fixture(scope='module')
def small_G():
    kwargs = ffhq512_small_kwargs()
    kwargs['rendering_kwargs'].update(depth_resolution=4, depth_resolution_importance=4)
    torch.manual_seed(0)
    return TriPlaneGenerator(**kwargs).eval().requires_grad_(False)


def _sigma(G, seed=0):
    g = torch.Generator().manual_seed(seed)
    z, coords = torch.randn([1, G.z_dim], generator=g), torch.rand([1, 64, 3], generator=g) - 0.5
    c = torch.zeros([1, G.c_dim])
    with torch.no_grad():
        return G.sample(coords, torch.zeros_like(coords), z, c, noise_mode='const')['sigma']


def test_untrusted_pickle_is_refused_before_reading(tmp_path):
    path = tmp_path / 'evil.pkl'
    path.write_bytes(b'not even a pickle')
    with pytest.raises(legacy.UntrustedPickleError, match='executes the code'):
        legacy.load_network_pkl(str(path))
    assert path.read_bytes() == b'not even a pickle'


def test_clear_errors_for_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='no such file'):
        legacy.load_network_pkl(str(tmp_path / 'missing.pkl'), trust=True)
    with pytest.raises(IOError, match='download it'):
        legacy.load_network_pkl('https://example.com/ffhq512-128.pkl', trust=True)
    garbled = tmp_path / 'garbled.pkl'
    garbled.write_bytes(b'\x80\x04garbage')
    with pytest.raises(ValueError, match='cannot unpickle'):
        legacy.load_network_pkl(str(garbled), trust=True)
    with pytest.raises(ValueError, match='not an EG3D network pickle'):
        legacy.load_network_pkl(io.BytesIO(pickle.dumps({'weights': [1, 2]})), trust=True)


def test_snapshot_round_trip_and_rebuild(tmp_path, small_G):
    path = str(tmp_path / 'snap' / 'network-snapshot-000000.pkl')
    legacy.save_network_pkl(path, dict(G=small_G, D=None, G_ema=small_G, training_set_kwargs=dict(resolution=64)))
    assert os.listdir(os.path.dirname(path)) == ['network-snapshot-000000.pkl']     # No temporary left behind.

    data = legacy.load_network_pkl(path, trust=True)
    assert set(legacy.SNAPSHOT_KEYS) <= set(data) and data['augment_pipe'] is None
    G = data['G_ema']
    assert persistence.is_persistent(G) and G.init_kwargs == small_G.init_kwargs
    assert torch.equal(_sigma(G), _sigma(small_G))

    rebuilt = legacy.rebuild_network(G)
    assert isinstance(rebuilt, TriPlaneGenerator) and rebuilt.rendering_kwargs == small_G.rendering_kwargs
    assert torch.equal(_sigma(rebuilt, seed=1), _sigma(small_G, seed=1))


def test_failed_save_keeps_the_previous_file(tmp_path, small_G):
    path = str(tmp_path / 'net.pkl')
    legacy.save_network_pkl(path, dict(G_ema=small_G))
    before = open(path, 'rb').read()
    with pytest.raises(Exception):
        legacy.save_network_pkl(path, dict(G_ema=small_G, bad=lambda: None))     # Lambdas do not pickle.
    assert open(path, 'rb').read() == before and os.listdir(tmp_path) == ['net.pkl']


def test_saved_snapshot_gets_the_usual_file_permissions(tmp_path, small_G):
    path = str(tmp_path / 'net.pkl')
    umask = os.umask(0o022)
    try:
        legacy.save_network_pkl(path, dict(G_ema=small_G))
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_rebuild_refuses_unknown_classes():
    with pytest.raises(ValueError, match='no project class'):
        legacy.rebuild_network(torch.nn.Linear(2, 2))
