"""One way to draw a seed: the bank, evaluate, the panel and the shape report see the same slab and the same picture."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.analysis.shapes import seed_shape
from eg3d_rlhf.finetune.panel import RewardPanel
from eg3d_rlhf.generators.eg3d import EG3DGenerator
from eg3d_rlhf.geometry.sigma import CubeGrid, slab_description, slab_grid
from eg3d_rlhf.rewards.checkpoint import load_reward, save_reward
from tests.helpers.rewards import tiny_reward
from tools import evaluate, sample_bank, shape_report
from training import legacy

pytestmark = pytest.mark.usefixtures('one_thread')

SEED, RES = 5, 40


def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def picture(path, size=None):
    """uint8 RGB [H, W, 3] of a PNG, or its top-left size x size block."""
    x = np.asarray(PIL.Image.open(path).convert('RGB'))
    return x if size is None else x[:size, :size]


@pytest.fixture(scope='module')
def drawn(tiny_network_pkl, tmp_path_factory):
    """Seed SEED drawn by every tool into one folder; returns that folder and the reward checkpoint."""
    root = tmp_path_factory.mktemp('recipe')
    reward_path = str(root / 'reward.pt')
    save_reward(reward_path, tiny_reward(), 'sigma', slab_description(RES))
    runner = CliRunner()
    ok(runner.invoke(sample_bank.main, ['--network', tiny_network_pkl, '--trust-pickle', '--seeds', str(SEED), '--res',
        str(RES), '--dtype', 'float32', '--preview-res', '32', '--outdir', str(root / 'bank'), '--device', 'cpu']))
    ok(runner.invoke(evaluate.main, ['--original', tiny_network_pkl, '--tuned', tiny_network_pkl, '--trust-pickle',
        '--reward-model', reward_path, '--seeds', str(SEED), '--annotator', 'oracle:nose', '--res', str(RES),
        '--outdir', str(root / 'evaluate'), '--device', 'cpu']))
    ok(runner.invoke(shape_report.main, ['--network', tiny_network_pkl, '--trust-pickle', '--seeds', str(SEED), '--res',
        str(RES), '--previews', '1', '--outdir', str(root / 'shapes'), '--device', 'cpu']))
    G = legacy.load_network_pkl(tiny_network_pkl, trust=True)['G_ema']
    (root / 'panel').mkdir()
    RewardPanel(str(root / 'panel'), reward_path, [SEED]).record(G, 0)
    return root, reward_path


def test_every_tool_shows_the_same_picture_of_a_seed(drawn):
    root, _ = drawn
    bank_image = picture(root / 'bank' / f'seed{SEED:06d}' / 'image.png')
    size = bank_image.shape[0]
    # evaluate's images.png: the original row above the tuned row, one tile per seed.
    evaluated = picture(root / 'evaluate' / 'images.png')
    np.testing.assert_array_equal(evaluated[:size, :size], bank_image)
    np.testing.assert_array_equal(evaluated[size:, :size], bank_image)
    # shape_report's fakes.png: the first tile.
    np.testing.assert_array_equal(picture(root / 'shapes' / 'fakes.png', size), bank_image)
    # The picture is the seed's own: another seed's differs.
    generator = EG3DGenerator(legacy.load_network_pkl(drawn_network(root), trust=True)['G_ema'])
    assert not np.array_equal(bank_image, generator.picture(SEED + 1))


def drawn_network(root):
    """The network the bank recorded (bank.json), so the test reloads exactly what was drawn."""
    return json.loads((root / 'bank' / 'bank.json').read_text())['network']


def test_every_tool_sees_the_same_sigma_slab_of_a_seed(drawn):
    root, reward_path = drawn
    bank_slab = torch.from_numpy(np.load(root / 'bank' / f'seed{SEED:06d}' / 'sigma_slab.npy'))
    reward = load_reward(reward_path)
    with torch.no_grad():
        expected = float(reward.score(bank_slab[None])[0])
    # The panel scores the seed's slab: the same reward as the bank's slab.
    panel = (root / 'panel' / 'reward_trajectories.csv').read_text().splitlines()
    assert panel[0] == f'kimg,seed{SEED:06d}'
    assert float(panel[1].split(',')[1]) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # evaluate scores it the same way (one seed: the mean is that seed's reward).
    report = json.loads((root / 'evaluate' / 'report.json').read_text())
    assert report['reward']['mean_before'] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # shape_report meshes the full cube: its slab region (inside gen_samples' border) is the bank's slab.
    generator = EG3DGenerator(legacy.load_network_pkl(drawn_network(root), trust=True)['G_ema'])
    volume, _stats = seed_shape(generator, SEED, CubeGrid(RES, cube_length=generator.cube_length))
    grid = slab_grid(RES, cube_length=generator.cube_length)
    crop = tuple(slice(a, b) for a, b in zip(grid.start, grid.stop))
    np.testing.assert_allclose(volume[crop], bank_slab.numpy(), rtol=1e-5, atol=1e-5)
    # And the slab is the seed's own: another seed's differs.
    other = generator.field([SEED + 1]).sample_grid(grid)[0].numpy()
    assert np.abs(other - bank_slab.numpy()).max() > 1e-3
