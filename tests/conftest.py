"""Shared pytest fixtures: where the reference data lives, golden loading, pinned renderer randomness."""

import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_dir():
    """$EG3D_RLHF_SHARED if set, else ../shared beside the checkout."""
    return os.environ.get('EG3D_RLHF_SHARED', os.path.join(os.path.dirname(REPO), 'shared'))


def shared_file(*parts):
    """Path of a reference file; skip the test, naming the file, when it is absent."""
    path = os.path.join(shared_dir(), *parts)
    if not os.path.isfile(path):
        pytest.skip(f'reference file not found: {path} (set EG3D_RLHF_SHARED to the folder holding eg3d_reference/)')
    return path


_golden_cache = {}

def load_golden(name):
    """Load (once per session) a golden file from eg3d_reference/, e.g. 'golden_ffhq512_small.pt'."""
    if name not in _golden_cache:
        _golden_cache[name] = torch.load(shared_file('eg3d_reference', name), weights_only=False)
    return _golden_cache[name]


@pytest.fixture(params=['golden_ffhq512_small.pt', 'golden_shapenet128_small.pt'], ids=['ffhq512', 'shapenet128'])
def golden(request):
    """Each golden in turn."""
    return load_golden(request.param)


@pytest.fixture
def pinned_rand(monkeypatch):
    """Make torch.rand_like and torch.rand return 0.5 everywhere, as the goldens' reference run did."""
    monkeypatch.setattr(torch, 'rand_like', lambda x, *a, **k: torch.full_like(x, 0.5, dtype=k.get('dtype', x.dtype)))
    def rand(*size, **k):
        if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
            size = tuple(size[0])
        k.pop('generator', None)
        k.pop('requires_grad', None)
        return torch.full(size, 0.5, **k)
    monkeypatch.setattr(torch, 'rand', rand)


@pytest.fixture
def one_thread():
    """One intra-op thread for modules of tiny tensors (spin-waiting threads cost more than they give); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def tiny_network_pkl(tmp_path_factory):
    """A network pickle holding tests.test_shape_tools.tiny_generator() as G and G_ema (no D)."""
    from tests.test_shape_tools import tiny_generator
    from training import legacy
    G = tiny_generator().eval()
    path = str(tmp_path_factory.mktemp('net') / 'tiny.pkl')
    legacy.save_network_pkl(path, dict(G=G, G_ema=G, D=None, augment_pipe=None, training_set_kwargs=None))
    return path


@pytest.fixture
def fresh_plugins(monkeypatch, tmp_path):
    """Plugins allowed, built into an empty cache (tmp_path / 'cache'), an empty plugin table, quiet: the next use of a
    plugin really builds it (or fails). Returns tmp_path."""
    from torch_utils import custom_ops
    monkeypatch.setenv('EG3D_RLHF_CACHE', str(tmp_path / 'cache'))
    monkeypatch.delenv('EG3D_RLHF_CUSTOM_OPS', raising=False)
    monkeypatch.setattr(custom_ops, '_cached_plugins', dict())
    monkeypatch.setattr(custom_ops, 'verbosity', 'none')
    return tmp_path
