"""The reward contract from the generator side: fine-tuning, the panel and evaluate score as the checkpoint declares."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.finetune import RewardPhase
from eg3d_rlhf.finetune.panel import RewardPanel
from eg3d_rlhf.generators.eg3d import EG3DGenerator
from eg3d_rlhf.geometry.sigma import normalise_sigma_self, slab_description
from eg3d_rlhf.rewards.checkpoint import load_reward, save_reward
from eg3d_rlhf.rewards.contract import InputSpec
from tests.helpers.eg3d import tiny_generator
from tests.helpers.rewards import latents, tiny_reward
from tools import evaluate
from training import legacy

pytestmark = pytest.mark.usefixtures('one_thread')

RES, SCALE, OFFSET = 32, 0.05, -1.0
SEEDS = [3, 4]


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A sigma reward whose contract is an affine map of raw sigma (a stored scale), not the default min-max."""
    path = str(tmp_path_factory.mktemp('contract') / 'affine.pt')
    spec = InputSpec(slab=slab_description(RES), normalisation='affine', scale=SCALE, offset=OFFSET)
    save_reward(path, tiny_reward(seed=4), 'sigma', spec)
    return path


def by_hand(model, raw):
    """The rewards the contract promises, computed without it: the affine map, then the network."""
    with torch.no_grad():
        return model.score(raw * SCALE + OFFSET)


def min_max_path(model, raw):
    with torch.no_grad():
        return model.score(normalise_sigma_self(raw))


def seed_slabs(G, seeds):
    generator = EG3DGenerator(G)
    grid = InputSpec(slab=slab_description(RES)).grid
    return generator.field(seeds).sample_grid(grid)


def test_fine_tuning_scores_g_through_the_checkpoints_contract(checkpoint):
    G = tiny_generator().requires_grad_(True)
    phase = RewardPhase(G, reward='sigma', reward_model=checkpoint, lambda_sigma=0)
    z, c = latents(G)
    field = phase.generator.latent_field(z, c, requires_grad=True)
    r = phase.reward.rewards(field)
    assert r.requires_grad
    raw = field.sample_grid(phase.reward.grid).detach()
    model = phase.reward.reward.model
    torch.testing.assert_close(r.detach(), by_hand(model, raw), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(by_hand(model, raw), min_max_path(model, raw), rtol=1e-3, atol=1e-4)


def test_the_panel_scores_seeds_through_the_checkpoints_contract(checkpoint, tiny_network_pkl, tmp_path):
    G = legacy.load_network_pkl(tiny_network_pkl, trust=True)['G_ema']
    panel = RewardPanel(str(tmp_path), checkpoint, SEEDS)
    panel.record(G, 0)
    expected = by_hand(panel.reward.model, seed_slabs(G, SEEDS)).numpy()
    np.testing.assert_allclose(panel.rewards[0], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected, min_max_path(panel.reward.model, seed_slabs(G, SEEDS)).numpy(), rtol=1e-3, atol=1e-4)


def test_evaluate_scores_both_generators_through_the_checkpoints_contract(checkpoint, tiny_network_pkl, tmp_path):
    result = CliRunner().invoke(evaluate.main, ['--original', tiny_network_pkl, '--tuned', tiny_network_pkl,
        '--trust-pickle', '--reward-model', checkpoint, '--seeds', ','.join(map(str, SEEDS)), '--outdir',
        str(tmp_path / 'report'), '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / 'report' / 'report.json').read_text())
    G = legacy.load_network_pkl(tiny_network_pkl, trust=True)['G_ema']
    expected = by_hand(load_reward(checkpoint).model, seed_slabs(G, SEEDS)).numpy()
    assert report['reward']['mean_before'] == pytest.approx(float(expected.mean()), rel=1e-5, abs=1e-6)
    assert report['reward']['mean_after'] == pytest.approx(float(expected.mean()), rel=1e-5, abs=1e-6)
