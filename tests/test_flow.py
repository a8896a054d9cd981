"""Flow pipelines: samplers, MSE_t, per-id noise, the volume field; a second two-stage pipeline through bank to reward."""

import json
import math
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from eg3d_rlhf.data.bank import Bank, BankWriter
from eg3d_rlhf.generators.flow import FlowGenerator, FlowPipeline, VolumeField, cfm_loss, euler, heun, mse_t, noise_seed
from eg3d_rlhf.geometry.sigma import CubeGrid
from eg3d_rlhf.rewards.checkpoint import load_reward
from tests.helpers.flow import Occupancy, OccupancyVelocity, tiny_generator, tiny_pipeline
from tools import annotate, train_reward

pytestmark = pytest.mark.usefixtures('one_thread')

#----------------------------------------------------------------------------
# Samplers and the flow-matching quantities.

def test_euler_and_heun_are_exact_on_a_constant_velocity():
    x0, c = torch.randn(3, 5), torch.randn(3, 5)
    for sampler in (euler, heun):
        for steps in (1, 3):
            torch.testing.assert_close(sampler(lambda x, t, cond, ctx: c, x0, steps), x0 + c)


def test_heun_beats_euler_where_the_velocity_changes():
    x0 = torch.randn(4, 2, dtype=torch.float64)
    grow = lambda x, t, cond, ctx: x                              # dx/dt = x: x1 = e x0.
    for steps in (2, 5):
        h = 1 / steps
        torch.testing.assert_close(euler(grow, x0, steps), x0 * (1 + h) ** steps)
        torch.testing.assert_close(heun(grow, x0, steps), x0 * (1 + h + h * h / 2) ** steps)
        assert (heun(grow, x0, steps) - math.e * x0).abs().max() < (euler(grow, x0, steps) - math.e * x0).abs().max()
    ramp = lambda x, t, cond, ctx: 2 * t[:, None].to(x.dtype).expand_as(x)   # dx/dt = 2t: x1 = x0 + 1.
    torch.testing.assert_close(heun(ramp, x0, 3), x0 + 1)                    # The trapezoid rule is exact on a line.
    torch.testing.assert_close(euler(ramp, x0, 4), x0 + 3 / 4)               # Left sums: 2 (0 + 1 + 2 + 3) / 16.


def test_mse_t_matches_a_hand_computation_per_sample():
    identity = lambda x, t, cond, ctx: x
    x0, x1 = torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[2.0, 4.0], [1.0, 3.0]])
    # Sample 0 at t = 0.5: x_t = (1, 2), target (2, 4) -> (1 + 4) / 2.
    # Sample 1 at t = 0.25: x_t = (1, 1.5), target (0, 2) -> (1 + 0.25) / 2; at t = 0.5: x_t = (1, 2) -> (1 + 0) / 2.
    torch.testing.assert_close(mse_t(identity, x0, x1, torch.tensor([0.5, 0.25])), torch.tensor([2.5, 0.625]))
    torch.testing.assert_close(mse_t(identity, x0, x1, 0.5), torch.tensor([2.5, 0.5]))
    other = x1.clone()
    other[1] += 1
    assert mse_t(identity, x0, other, 0.5)[0] == mse_t(identity, x0, x1, 0.5)[0]      # One sample's data, one entry.
    with pytest.raises(AssertionError):
        mse_t(lambda x, t, cond, ctx: x[:, :1], x0, x1, 0.5)                          # A velocity of the wrong shape.


def test_cfm_loss_is_the_mean_mse_t_and_its_gradient_reaches_the_model():
    torch.manual_seed(1)
    model = nn.Linear(3 + 1, 3)
    velocity = lambda x, t, cond, ctx: model(torch.cat([x, t[:, None]], dim=1))
    x0, x1 = torch.randn(6, 3), torch.randn(6, 3)
    loss = cfm_loss(velocity, x0, x1, generator=torch.Generator().manual_seed(5))
    t = torch.rand([6], generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(loss, mse_t(velocity, x0, x1, t).mean())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in model.parameters())

#----------------------------------------------------------------------------
# Noise, the volume field, the adapter.

def test_noise_of_an_id_does_not_depend_on_its_batch():
    pipeline = tiny_pipeline()
    alone, batch = pipeline.noise([5], 0, None), pipeline.noise([3, 5, 7], 0, None)
    assert torch.equal(alone[0], batch[1]) and not torch.equal(batch[0], batch[1])
    assert not torch.equal(pipeline.noise([5], 1, None)[0].flatten()[:64], alone[0].flatten())      # Stages differ.
    assert noise_seed(5, 0) == noise_seed(5, 0) != noise_seed(5, 1) != noise_seed(6, 1)
    generator = tiny_generator()
    grid = CubeGrid(9, generator.cube_length)
    single = generator.field([5], 1).sample_grid(grid)
    mixed = generator.field([3, 5, 7, 5], 1).sample_grid(grid)
    assert torch.equal(single[0], mixed[1]) and torch.equal(mixed[1], mixed[3]) and not torch.equal(mixed[0], mixed[1])
    assert not torch.equal(generator.volumes([5], 0), generator.volumes([5], 1))                   # The condition counts.


def test_volume_field_interpolates_in_xyz_order_and_is_empty_outside():
    torch.manual_seed(2)
    volumes = torch.randn(2, 5, 5, 5) * 10
    field = VolumeField(volumes, cube_length=2.0, empty=-7.0)
    grid = CubeGrid(5, 2.0)
    torch.testing.assert_close(field.sample_grid(grid), volumes, rtol=0, atol=1e-5)     # Grid points read their voxels.
    p = grid.index_to_world([[1.5, 2, 3], [1, 2.5, 3], [1, 2, 3.5]])                     # Halfway along x, y, z.
    halfway = field.sample(torch.as_tensor(p, dtype=torch.float32))[..., 0]
    v = volumes
    expected = torch.stack([(v[:, 1, 2, 3] + v[:, 2, 2, 3]) / 2, (v[:, 1, 2, 3] + v[:, 1, 3, 3]) / 2,
        (v[:, 1, 2, 3] + v[:, 1, 2, 4]) / 2], dim=1)
    torch.testing.assert_close(halfway, expected, rtol=0, atol=1e-5)
    outside = field.sample(torch.tensor([[1.01, 0, 0], [0, -1.2, 0], [0, 0, 3.0]]))
    assert torch.equal(outside, torch.full([2, 3, 1], -7.0))


def test_second_pipeline_hands_off_without_gradient_and_encodes_back():
    generator = tiny_generator()
    pipeline = generator.pipeline
    drawn = pipeline.sample([4, 9], 0, steps=4)
    occupancy, patches = drawn.runs
    assert occupancy.context is None and torch.equal(patches.context, occupancy.x1 > 0)
    assert patches.noise_seeds == [noise_seed(4, 1), noise_seed(9, 1)]
    runs = pipeline.runs_from_asset([4, 9], drawn.sigma)                      # Circular-DPO's path: asset -> x1.
    assert torch.equal(runs[1].context, patches.context) and torch.equal(runs[0].x0, occupancy.x0)
    torch.testing.assert_close(pipeline.stages[1].decode(runs[1].x1, runs[1].context), drawn.sigma)
    velocity = pipeline.stages[1].velocity
    assert mse_t(velocity, runs[1].x0, runs[1].x1, 0.3, None, runs[1].context).shape == (2,)
    # Sigma is differentiable through the last stage's sampler; the threshold cuts stage 1 off.
    generator.field([4], 0, requires_grad=True).sample_grid(CubeGrid(6)).sum().backward()
    assert all(p.grad is None for p in pipeline.stages[0].velocity.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in velocity.parameters())


def test_reference_is_a_frozen_copy():
    generator = tiny_generator()
    reference = generator.reference()
    assert reference.settings() == generator.settings()
    assert torch.equal(reference.volumes([3], 1), generator.volumes([3], 1))
    assert not any(p.requires_grad for m in reference.pipeline.modules() for p in m.parameters())
    with torch.no_grad():
        generator.pipeline.stages[1].velocity.mix.bias.add_(1.0)
    assert not torch.equal(reference.volumes([3], 1), generator.volumes([3], 1))


def test_bad_input_is_refused_in_one_line():
    generator, pipeline = tiny_generator(), tiny_pipeline()
    one_stage = FlowPipeline([Occupancy(OccupancyVelocity())], conditions=2)
    for call, message in (
            (lambda: generator.field([1]), 'needs a condition in 0..1'),
            (lambda: generator.field([1], 2), 'needs a condition in 0..1'),
            (lambda: FlowPipeline([Occupancy(OccupancyVelocity())]).sample([1], 0), 'is unconditional'),
            (lambda: pipeline.sample([1], 0, sampler='rk4'), "unknown sampler 'rk4'"),
            (lambda: pipeline.sample([1], 0, steps=0), 'steps must be a positive integer'),
            (lambda: one_stage.sample([1], 0), "the last stage's decode must be raw sigma [1, R, R, R]"),
            (lambda: pipeline.runs_from_asset([1, 2], torch.zeros(1, 8, 8, 8)), 'the asset must be raw sigma [2, R, R'),
            (lambda: VolumeField(torch.zeros(2, 3, 3)), 'VolumeField volumes must be raw sigma [N, R, R, R], got shape'),
            (lambda: FlowPipeline([]), 'non-empty list of FlowStage'),
            (lambda: Occupancy(3), 'must be callable'),
            (lambda: FlowGenerator(pipeline, sampler='midpoint'), 'unknown sampler'),
            (lambda: noise_seed(-1, 0), 'non-negative')):
        with pytest.raises(ValueError) as info:
            call()
        assert message in str(info.value) and '\n' not in str(info.value), str(info.value)

#----------------------------------------------------------------------------
# The acceptance path: bank -> simulated annotator -> train_reward, on the second pipeline.

TINY_SIGMA = dict(trunk='cnn', members=1, channels=[4, 8, 8, 8, 16], hidden=16)


def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_second_pipeline_runs_bank_annotate_and_train_reward(tmp_path):
    generator = tiny_generator()
    writer = BankWriter(str(tmp_path / 'bank'), generator, resolution=24, dtype='float32', preview_res=24)
    writer.open()
    seeds = range(12)
    for condition in (0, 1):
        for seed in seeds:
            writer.write(seed, condition)
    bank = Bank(str(tmp_path / 'bank'))
    assert bank.ids == sorted(f'c{c:02d}-seed{s:06d}' for c in (0, 1) for s in seeds)
    meta = bank.meta('c01-seed000003')
    assert (meta['id'], meta['seed'], meta['condition'], meta['generator']) == ('c01-seed000003', 3, 1, 'flow')
    assert meta['noise_seeds'] == [noise_seed(3, 0), noise_seed(3, 1)] and meta['stages'] == ['occupancy', 'patches']
    assert Bank.read_settings(bank.root)['sampler'] == 'heun'
    slab = bank.slab('c01-seed000003')                                        # One id, one slab, wherever drawn.
    assert np.array_equal(slab, generator.field([3], 1).sample_grid(bank.grid('c01-seed000003'))[0].numpy())
    assert all((s >= 10).any() and (s < 10).any() for s in bank.slabs().values())    # Every sample has a surface.
    for name in ('image.png', 'preview_front.png', 'preview_profile.png'):
        with PIL.Image.open(bank.path('c01-seed000003', name)) as im:
            assert len(set(np.asarray(im).flatten().tolist())) > 2, name              # Shaded, not blank.

    labels, truth = tmp_path / 'labels.jsonl', tmp_path / 'truth.csv'
    ok(CliRunner().invoke(annotate.main, ['pairs', '--bank', bank.root, '--annotator', 'oracle:nose', '--pairs', '200',
        '--out', str(labels), '--scores-out', str(truth)]))
    judged = [json.loads(line) for line in labels.read_text().splitlines()]
    assert len(judged) == 200 and {j['choice'] for j in judged} == {'a', 'b'}        # Both sides win (theta 1: no ties).

    out = tmp_path / 'reward' / 'reward.pt'
    ok(CliRunner().invoke(train_reward.main, ['--bank', bank.root, '--labels', str(labels), '--truth', str(truth),
        '--split', '0.5,0.25,0.25', '--epochs', '2', '--model-config', json.dumps(TINY_SIGMA), '--out', str(out),
        '--device', 'cpu']))
    for suffix in ('.pt', '.metrics.jsonl', '.report.json', '.curves.png'):
        assert os.path.isfile(tmp_path / 'reward' / f'reward{suffix}'), suffix
    reward = load_reward(str(out))
    assert reward.spec.slab == meta['slab'] and reward.info['training']['bank'] == os.path.abspath(bank.root)
    scores = reward.score_slabs(bank.slab(i) for i in bank.ids)
    assert scores.shape == (len(bank),) and np.isfinite(scores).all() and len(set(scores.tolist())) > 1

#----------------------------------------------------------------------------
