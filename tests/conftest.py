"""Shared pytest fixtures: where the reference data lives, golden loading, pinned renderer randomness."""

import os

import pytest
import torch

pytest.register_assert_rewrite('tests.helpers')      # The shared builders' asserts explain themselves, as tests' do.

# Triton's CPU interpreter for the kernel tests (tests/test_triton_*.py): triton reads TRITON_INTERPRET when it is first
# imported (its own @jit helpers, tl.sum and the like) and when @triton.jit decorates, so it is set here, before any
# test can import triton. TRITON_INTERPRET=0 in the environment keeps compiled kernels (a GPU machine's own checks).
os.environ.setdefault('TRITON_INTERPRET', '1')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    """Under pytest-xdist (README's `-n 2`), the cores are shared out among the workers: each worker and every
    process it starts runs torch on its share of threads, so N workers never run N times the cores' threads."""
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT') or 0)
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ['OMP_NUM_THREADS'] = str(threads)          # Read by child processes' torch at its import.
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(session, config, items):
    """Files holding a test marked slow run first (each file's tests in their order): with `--dist loadfile` the
    workers take whole files in this order, so the long ones start early and the workers finish together."""
    has_slow = {item.path for item in items if item.get_closest_marker('slow') is not None}
    items.sort(key=lambda item: item.path not in has_slow)                  # A stable sort keeps each file's order.


@pytest.fixture(scope='session', autouse=True)
def panel_cache_of_the_session(tmp_path_factory):
    """Reward panels keep their start evidence (finetune/panel_cache.py) in a folder of this session's, not the user's
    cache: every session computes it once, as a fresh machine does; child processes see the same folder."""
    os.environ['EG3D_RLHF_PANEL_CACHE'] = str(tmp_path_factory.mktemp('panel-cache'))


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
    """A network pickle holding tests.helpers.eg3d.tiny_generator() as G and G_ema (no D)."""
    from tests.helpers.eg3d import tiny_generator
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

#----------------------------------------------------------------------------
# Fixtures shared by several test files (their builders live in tests/helpers/; imported on use, so collecting a test
# file that needs none of them stays cheap).

@pytest.fixture(scope='module')
def faces(tmp_path_factory):
    """A bank of ten faces on slab_grid(32), with the noses of tests.helpers.banks.NOSES."""
    from eg3d_rlhf.geometry.sigma import slab_grid
    from tests.helpers.banks import NOSES, face_volume, write_bank
    g = slab_grid(32)
    return write_bank(tmp_path_factory.mktemp('faces') / 'bank', {k: face_volume(g, v) for k, v in NOSES.items()}, 32)


@pytest.fixture(scope='module')
def balls(tmp_path_factory):
    """40 balls, 300 noise-free judgements (bigger liked), the true radii as id,reward and a median good/bad split."""
    import numpy as np
    from eg3d_rlhf.data import annotators, preferences
    from eg3d_rlhf.data.scores import write_scores
    from tests.helpers.banks import ball_bank
    folder = tmp_path_factory.mktemp('balls')
    root, radii = ball_bank(folder / 'bank', 40, seed=1)
    oracle = annotators.OracleAnnotator('nose', radii, temperature=0, seed=0)
    preferences.write_judgements(str(folder / 'labels.jsonl'), oracle.judgements(oracle.draw_pairs(radii, 300)))
    write_scores(str(folder / 'truth.csv'), radii)
    median = np.median(list(radii.values()))
    (folder / 'good.txt').write_text(''.join(f'{k}\n' for k, v in radii.items() if v > median))
    (folder / 'bad.txt').write_text(''.join(f'{k}\n' for k, v in radii.items() if v <= median))
    return dict(bank=root, radii=radii, labels=str(folder / 'labels.jsonl'), truth=str(folder / 'truth.csv'),
        good=str(folder / 'good.txt'), bad=str(folder / 'bad.txt'))


@pytest.fixture(scope='session')
def scored(tmp_path_factory):
    """A bank of four balls on the 40^3 slab and a tiny sigma reward of that slab (tests.helpers.scored), built once:
    tests read it, or change a copy (copy_bank). test_reward_training.py keeps a `scored` of its own."""
    from tests.helpers.scored import scored_bank
    return scored_bank(tmp_path_factory.mktemp('scored'))

#----------------------------------------------------------------------------

@pytest.fixture
def tiny_models(monkeypatch):
    """train_reward builds (and fitting fits) small models of the asked-for kind."""
    from eg3d_rlhf.rewards import build_reward
    from eg3d_rlhf.rewards import fitting as R
    from tests.helpers.rewards import TINY
    from tools import train_reward
    tiny = lambda kind, **extra: build_reward(kind, **{**TINY[kind], **extra})
    monkeypatch.setattr(train_reward, 'build_reward', tiny)
    monkeypatch.setattr(R, 'build_reward', tiny)


@pytest.fixture
def reward_checkpoint(tmp_path):
    """tests.helpers.rewards.tiny_reward(seed=3) saved as a sigma reward on the 24^3 cube's slab."""
    from eg3d_rlhf.rewards.checkpoint import save_reward
    from tests.helpers.rewards import slab_description, tiny_reward
    path = str(tmp_path / 'reward.pt')
    save_reward(path, tiny_reward(seed=3), 'sigma', slab_description())
    return path


@pytest.fixture(scope='module')
def rewards(tmp_path_factory):
    """{kind: checkpoint}: a tiny sigma reward and a pointcloud reward, on the slab of a box of side 1."""
    from eg3d_rlhf.rewards import build_reward
    from eg3d_rlhf.rewards.checkpoint import save_reward
    from tests.helpers.rewards import slab_description, tiny_reward
    root = tmp_path_factory.mktemp('rewards')
    paths = dict(sigma=str(root / 'sigma.pt'), pointcloud=str(root / 'pointcloud.pt'))
    save_reward(paths['sigma'], tiny_reward(seed=3), 'sigma', slab_description())
    save_reward(paths['pointcloud'], build_reward('pointcloud', num_points=64, widths=[8, 8, 16], hidden=8), 'pointcloud',
        slab_description())
    return paths

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """tests.helpers.train.make_zip_dataset's eight 64x64 heads."""
    from tests.helpers.train import make_zip_dataset
    return make_zip_dataset(tmp_path_factory.mktemp('data') / 'heads64.zip')


@pytest.fixture(scope='module')
def start_pkl(data, tmp_path_factory):
    """A fresh synthetic-preset G, D and G_ema of TINY_NETS' width as a network pickle to fine-tune from."""
    import dnnlib
    from tests.helpers.train import TINY_NETS, base_args, config_of
    from training import legacy, training_loop
    c = config_of(base_args(data, 'unused', *TINY_NETS))
    training_set = dnnlib.util.construct_class_by_name(**c.training_set_kwargs)
    G, D, G_ema = training_loop.build_networks(training_set, c.G_kwargs, c.D_kwargs, 'cpu')
    path = str(tmp_path_factory.mktemp('start') / 'start.pkl')
    legacy.save_network_pkl(path, dict(G=G, D=D, G_ema=G_ema, augment_pipe=None, training_set_kwargs=dict(c.training_set_kwargs)))
    return path


@pytest.fixture(scope='module')
def tiny_pair(tmp_path_factory):
    """(original, tuned, reward) of tiny generators: the tuned G has its decoder output bias shifted."""
    from tests.helpers.evaluate import save_pair
    return save_pair(tmp_path_factory.mktemp('eval'), (0.0, 0.5))

#----------------------------------------------------------------------------

@pytest.fixture
def served(monkeypatch):
    """Run `serve` in-process; instead of serving forever, record the server's address and first state."""
    from click.testing import CliRunner
    from tools import label
    seen = {}
    def serve_forever(self):
        seen.update(address=self.server_address, state=self.session.state(), session=self.session)
    monkeypatch.setattr(label.LabelServer, 'serve_forever', serve_forever)
    def run(*args):
        seen.clear()
        result = CliRunner().invoke(label.main, ['serve', '--port', '0', *[str(a) for a in args]])
        return result, dict(seen)
    return run

#----------------------------------------------------------------------------
