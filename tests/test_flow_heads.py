"""The bundled heads flow model: sigma map, encode/decode, families, training, checkpoints, per-id sampling, train_flow."""

import json
import math
import os

import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.generators import flow_heads
from eg3d_rlhf.generators.flow import (INVARIANT_TOLERANCE, FlowGenerator, VolumeField, batch_invariant, blur,
    invariant_passes, noise_seed)
from eg3d_rlhf.generators.registry import FAMILIES
from eg3d_rlhf.geometry.sigma import slab_grid
from eg3d_rlhf.geometry.sigma import CubeGrid
from eg3d_rlhf.synthetic import flow_data, world
from tests.helpers.cli import digest, files_under, invoke, refused_in_one_line
from tests.helpers.flow import tiny_pipeline
from tools import train_flow

pytestmark = pytest.mark.usefixtures('one_thread')

TINY = flow_heads.PRESETS['tiny']
R = TINY['grid'] * TINY['patch']


def tiny_assets(count=4):
    sdf, families = flow_data.training_heads(0, count, R, TINY['conditions'])
    return flow_heads.sdf_to_sigma(sdf, flow_heads.truncation_length(TINY)), families


def tiny_generator(seed=0):
    torch.manual_seed(seed)
    return flow_heads.build_generator(flow_heads.build_pipeline(TINY), TINY, image_res=16)

#----------------------------------------------------------------------------

def test_sigma_map_has_level_10_on_the_zero_level_and_inverts_within_the_truncation():
    trunc = 0.05
    sdf = torch.linspace(-2 * trunc, 2 * trunc, 81)
    sigma = flow_heads.sdf_to_sigma(sdf, trunc)
    assert flow_heads.sdf_to_sigma(torch.zeros([]), trunc).item() == flow_heads.LEVEL == 10.0
    assert (sigma[sdf >= trunc] == flow_heads.EMPTY).all() and (sigma[sdf <= -trunc] == 30.0).all()
    assert (sigma.diff() <= 0).all()
    band = sdf.abs() <= trunc
    torch.testing.assert_close(flow_heads.sigma_to_sdf(sigma, trunc)[band], sdf[band])


def test_encode_and_decode_round_trip_on_a_sphere_and_a_head():
    pipeline = flow_heads.build_pipeline(TINY)
    structure, detail = pipeline.stages
    points = CubeGrid(R, TINY['cube_length']).points(0, R ** 3).reshape(R, R, R, 3)
    sphere = flow_heads.sdf_to_sigma(points.norm(dim=-1) - 0.3, flow_heads.truncation_length(TINY))[None]
    occupancy = structure.encode(sphere, None)
    assert occupancy.shape == (1, 1, 4, 4, 4) and set(occupancy.unique().tolist()) == {-1.0, 1.0}
    active = structure.decode(occupancy, None)
    assert active[0, 1:3, 1:3, 1:3].all() and not active[0, 0, 0, 0]     # Centre in, corners out.
    x1 = detail.encode(sphere, active)
    assert x1.shape == (1, 1, R, R, R) and x1.abs().max() <= 1
    decoded = detail.decode(x1, active)
    mask = detail.fine_mask(active)
    torch.testing.assert_close(decoded[mask], sphere[mask])
    assert (decoded[~mask] == flow_heads.EMPTY).all() and (sphere[~mask] < flow_heads.LEVEL).all()
    head, _ = tiny_assets(1)
    head_active = structure.decode(structure.encode(head, None), None)
    assert 0 < head_active.sum() < 64 and not head_active[0, 0, 0, 0]
    runs = pipeline.runs_from_asset([3], head)                            # What MSE_t needs, straight from an asset.
    assert torch.equal(runs[1].context, head_active)


def test_patches_fold_into_channels_and_the_detail_velocity_stays_in_active_voxels():
    x = torch.randn(2, 1, 8, 8, 8)
    folded = flow_heads.fold(x, 2)
    assert folded.shape == (2, 8, 4, 4, 4)
    assert torch.equal(folded[1, :, 3, 0, 2], x[1, 0, 6:8, 0:2, 4:6].flatten())      # Voxel (3, 0, 2)'s 2^3 patch.
    assert torch.equal(flow_heads.unfold(folded, 2), x)
    torch.manual_seed(0)
    velocity = flow_heads.DetailVelocity(4, 2, 8, 2, 2)
    torch.nn.init.normal_(velocity.out.weight)                                      # It starts at zero.
    active = torch.zeros([1, 4, 4, 4], dtype=torch.bool)
    active[0, 1:3, 1:3, 0] = True
    v = velocity(x[:1], torch.tensor([0.5]), torch.tensor([1]), active)
    inside = flow_heads.Detail(velocity, 4, 2).fine_mask(active)[:, None]
    assert v.shape == x[:1].shape and (v[~inside] == 0).all() and (v[inside] != 0).all()


def test_the_detail_decode_low_passes_by_its_smooth_setting():
    impulse = torch.zeros([1, 15, 15, 15], dtype=torch.float64)
    impulse[0, 7, 7, 7] = 1
    blurred = blur(impulse[:, None], 1.5)[0, 0]
    assert blurred.sum().item() == pytest.approx(1.0) and torch.allclose(blurred, blurred.flip(0).permute(1, 2, 0))
    offsets = (torch.arange(15, dtype=torch.float64) - 7) ** 2
    assert (blurred.sum(dim=(1, 2)) * offsets).sum().item() == pytest.approx(1.5 ** 2, rel=0.02)   # Variance sigma^2.
    constant = torch.full([2, 6, 6, 6], 3.0)
    assert torch.allclose(blur(constant[:, None], 0.7)[:, 0], constant)
    from eg3d_rlhf.analysis.flow_quality import surface_lumpiness
    radius = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 16)] * 3, indexing='ij')).norm(dim=0)
    noise = torch.randn([16, 16, 16], generator=torch.Generator().manual_seed(0))
    x = ((radius - 0.6) * 3 + 0.1 * noise)[None, None]                 # A speckled ball, normalised SDF.
    active = torch.ones([1, 8, 8, 8], dtype=torch.bool)
    velocity = flow_heads.DetailVelocity(8, 2, 4, 1, 1)
    rough, smooth = (flow_heads.Detail(velocity, 8, 2, smooth=s).decode(x, active)[0] for s in (0.0, 0.7))
    assert torch.equal(rough, flow_heads.LEVEL - flow_heads.SPAN * x[0, 0].clamp(-1, 1))    # smooth 0: no blur at all.
    lump = lambda sigma: surface_lumpiness(flow_heads.sigma_to_sdf(sigma, 2 / 15), 1 / 15)
    assert lump(smooth) < 0.8 * lump(rough)
    assert flow_heads.check_config({})['smooth'] == 0.7 and flow_heads.PRESETS['tiny']['smooth'] == 0.0
    with pytest.raises(ValueError, match='smooth must be a number'):
        flow_heads.check_config(dict(smooth=-1))


def randomised(module, seed=0):
    """The module with every weight drawn at random (the output layers start at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return module


def test_mirror_velocities_are_mirror_equivariant_and_the_structure_decode_symmetric():
    g, p = TINY['grid'], TINY['patch']
    x = torch.randn(2, 1, g * p, g * p, g * p, generator=torch.Generator().manual_seed(1))
    t, cond = torch.tensor([0.3, 0.8]), torch.tensor([0, 1])
    active = torch.rand(2, g, g, g, generator=torch.Generator().manual_seed(2)) > 0.4
    for mirror in (False, True):
        structure = randomised(flow_heads.ConvVelocity(g, 8, 2, 2, patch=p, mirror=mirror))
        detail = randomised(flow_heads.DetailVelocity(g, p, 8, 2, 2, mirror=mirror))
        for velocity, context, flipped in ((structure, None, None), (detail, active, active.flip(1))):
            v, v_image = velocity(x, t, cond, context), velocity(x.flip(2), t, cond, flipped)
            assert v.abs().mean() > 0.1
            assert torch.allclose(v_image, v.flip(2), atol=1e-6) == mirror      # Only with mirror: v(Mx) = M v(x).
    head, _ = tiny_assets(1)
    lopsided = head.clone()
    lopsided[0, :R // 2] = flow_heads.EMPTY                                  # Half the head gone: x < 0 side empty.
    plain = flow_heads.Structure(structure, g, p)
    symmetric = flow_heads.Structure(structure, g, p, mirror=True)
    for asset, is_symmetric in ((head, True), (lopsided, False)):
        occupancy = plain.decode(plain.encode(asset, None), None)
        union = occupancy | occupancy.flip(1)                               # Every voxel with an inside point kept.
        assert torch.equal(symmetric.decode(symmetric.encode(asset, None), None), union)
        assert torch.equal(occupancy, union) == is_symmetric               # A training head's structure is symmetric.
    x1 = torch.randn(3, 1, g, g, g, generator=torch.Generator().manual_seed(3))
    active = symmetric.decode(x1, None)
    assert torch.equal(active, active.flip(1)) and not torch.equal(plain.decode(x1, None), plain.decode(x1, None).flip(1))


def test_a_mirror_model_draws_symmetric_structures_and_files_without_the_key_load_without_it(tmp_path):
    config = dict(TINY, mirror=True)
    torch.manual_seed(0)
    pipeline = flow_heads.build_pipeline(config)
    for m in pipeline.modules():
        randomised(m)
    G = flow_heads.build_generator(pipeline, config, image_res=16)
    sample = G.samples([5, 6], 1)
    for s in sample:
        active = s.runs[1].context
        assert torch.equal(active, active.flip(1)) and 0 < active.sum() < active.numel()
    assert not torch.equal(sample[0].sigma, sample[0].sigma.flip(1))      # Each sample keeps its noise's asymmetry.
    path = str(tmp_path / 'flow.pt')
    flow_heads.save_flow(path, pipeline, config)
    assert flow_heads.read_flow(path)['config']['mirror'] is True
    assert torch.equal(flow_heads.load_flow(path, image_res=16).volumes([5], 1), G.volumes([5], 1))
    state = torch.load(path, weights_only=True)
    del state['config']['mirror']                                           # A file from before the key.
    torch.save(state, path)
    assert flow_heads.read_flow(path)['config']['mirror'] is False
    assert flow_heads.check_config({})['mirror'] is True and TINY['mirror'] is False
    with pytest.raises(ValueError, match='mirror must be true or false'):
        flow_heads.check_config(dict(mirror='yes'))


def test_families_come_from_head_parameters():
    heads = [world.sample(0, i).head for i in range(48)]
    families = [flow_data.head_family(h, 4) for h in heads]
    assert all(0 <= f < 4 for f in families) and len(set(families)) >= 3
    assert families == [flow_data.head_family(world.sample(0, i).head, 4) for i in range(48)]
    _, conditions = flow_data.training_heads(0, 6, 4, 4)
    assert conditions.tolist() == families[:6]


def test_builds_scale_world_heads_about_their_origin():
    builds = [flow_data.build(0, i, 0.15) for i in range(200)]
    assert 0.85 <= min(builds) < 0.88 and 1.12 < max(builds) <= 1.15              # Uniform over the whole range.
    assert builds == [flow_data.build(0, i, 0.15) for i in range(200)] != [flow_data.build(1, i, 0.15) for i in range(200)]
    assert flow_data.build(0, 7, 0.0) == 1.0
    with pytest.raises(ValueError, match='build spread'):
        flow_data.build(0, 0, 1.5)
    plain, grown = world.sample(0, 3), flow_data.flow_head(0, 3, 0.15)
    b, origin = flow_data.build(0, 3, 0.15), torch.tensor(plain.head.origin)
    points = torch.rand(64, 3) * 0.6 - 0.3
    expected = b * world.sdf([plain], origin + (points - origin) / b)[0]          # sdf of the head scaled by b.
    assert torch.allclose(world.sdf([grown], points)[0], expected, atol=1e-6)
    assert flow_data.head_family(grown.head, 8) == flow_data.head_family(plain.head, 8)  # Families ignore the build.


def test_training_lowers_the_loss_on_a_fixed_batch():
    assets, conditions = tiny_assets(4)
    torch.manual_seed(0)
    pipeline = flow_heads.build_pipeline(TINY)
    optimizer = flow_heads.make_optimizer(pipeline, 5e-3)
    losses = [flow_heads.train_step(pipeline, optimizer, assets, conditions, step, 4, 0) for step in range(30)]
    assert all(torch.isfinite(torch.tensor(l)).all() for l in losses)
    first, last = torch.tensor(losses[:6]).mean(0), torch.tensor(losses[-6:]).mean(0)
    assert (last < first).all(), (first, last)

#----------------------------------------------------------------------------

def test_sampling_is_deterministic_per_id():
    G = tiny_generator()
    assert isinstance(G, FlowGenerator) and G.sample_id(5, 1) == 'c01-seed000005'
    a, b = G.volumes([5], 1), G.volumes([7, 5], 1)
    assert torch.equal(a[0], b[1]) and not torch.equal(b[0], b[1])
    assert a.shape == (1, R, R, R)
    assert torch.equal(tiny_generator().volumes([5], 1), a)                   # Same weights, same id: same bits.


def test_drawn_volumes_are_kept_until_the_weights_change():
    G = tiny_generator()
    G.keep = 2
    first = G.volumes([1, 2, 3], 0)                                         # More ids than are kept: all returned.
    assert list(G._cache['samples']) == [(2, 0), (3, 0)]
    assert torch.equal(G.volumes([3], 0)[0], first[2])
    with torch.no_grad():
        for p in G.pipeline.modules()[1].parameters():
            p.add_(0.1)                                                     # An optimiser step, say.
    assert G._cache['samples'] and not torch.equal(G.volumes([3], 0)[0], first[2])
    assert list(G._cache['samples']) == [(3, 0)]


def test_batched_draws_repeat_and_agree_with_single_draws():
    G, batched = tiny_generator(), tiny_generator()
    batched.draw_batch = batched.keep = 4
    calls = []
    sample = batched.pipeline.sample
    batched.pipeline.sample = lambda seeds, *a: calls.append(list(seeds)) or sample(seeds, *a)
    drawn = batched.samples([0, 1, 2, 3, 4], 1)
    assert calls == [[0, 1, 2, 3], [4]] and [s.runs[0].noise_seeds for s in drawn[:1]] == [[noise_seed(0, 0)]]
    assert batched.settings()['draw_batch'] == 4 and 'draw_batch' not in G.settings()
    assert torch.equal(batched.volumes([3, 4], 1), torch.cat([drawn[3].sigma, drawn[4].sigma])) and len(calls) == 2
    assert torch.allclose(batched.volumes([3], 1), G.volumes([3], 1), atol=1e-3)   # Batch mates move bits, not shapes.
    assert torch.equal(drawn[2].runs[1].context, G.samples([2], 1)[0].runs[1].context)
    with pytest.raises(ValueError, match='draw_batch'):
        FlowGenerator(G.pipeline, draw_batch=0)


def test_invariant_velocity_passes_give_each_sample_its_lone_bits():
    bundled = flow_heads.load_flow(FAMILIES['flow'].bundled['bundled-flow'])
    for stage, width in zip(bundled.pipeline.stages, (16, 32)):           # Structure, then detail (mask as context).
        velocity = stage.velocity
        x = torch.randn([9, 1, width, width, width], generator=torch.Generator().manual_seed(0))
        active = torch.rand([9, 16, 16, 16], generator=torch.Generator().manual_seed(1)) > 0.5
        context = active if stage.name == 'detail' else None
        part = lambda k, n: (x[k : k + n], torch.full([n], 0.375), torch.full([n], 3), None if context is None
            else context[k : k + n])
        with torch.no_grad(), batch_invariant():
            alone = torch.cat([velocity(*part(k, 1)) for k in range(9)])
            for start, n in ((0, 9), (2, 5), (4, 2)):                      # Other batch sizes, other mates.
                assert torch.equal(velocity(*part(start, n)), alone[start : start + n]), (stage.name, start, n)
        assert not invariant_passes()
        with torch.no_grad():
            assert (velocity(*part(0, 9)) - alone).abs().max() < 1e-3      # Plain passes: rounding apart.


def test_invariant_draws_of_an_id_are_the_same_alone_and_in_any_batch():
    path = FAMILIES['flow'].bundled['bundled-flow']
    draw = lambda batch, seeds: flow_heads.load_flow(path, invariant=True, draw_batch=batch, keep=8).samples(seeds, 5)
    alone = {seed: draw(1, [seed])[0] for seed in (3, 11)}
    for batch, seeds in ((3, [7, 3, 11]), (4, [11, 40, 41, 3, 9])):         # Different mates and batch sizes.
        for seed, sample in zip(seeds, draw(batch, seeds)):
            if seed in alone:
                assert torch.equal(sample.sigma, alone[seed].sigma)
                assert all(torch.equal(a.x1, b.x1) for a, b in zip(sample.runs, alone[seed].runs))
    with_grad = flow_heads.load_flow(path, invariant=True).volumes([11], 5, requires_grad=True)   # draw()'s passes.
    assert torch.equal(with_grad, alone[11].sigma)
    plain = flow_heads.load_flow(path).samples([3, 11], 5)                  # Today's one-id passes: the tolerance.
    grid = slab_grid(64, cube_length=1.0)
    for seed, other in zip((3, 11), plain):
        assert (alone[seed].sigma - other.sigma).abs().max() <= INVARIANT_TOLERANCE
        assert torch.equal(alone[seed].runs[1].context, other.runs[1].context)         # The same structure.
        slabs = [VolumeField(s.sigma).sample_grid(grid) for s in (alone[seed], other)]
        assert ((slabs[0] >= 10) != (slabs[1] >= 10)).sum() <= 1                          # Level 10 barely moves.


def test_invariant_draws_need_invariant_velocities_and_are_recorded():
    G = tiny_generator()
    invariant = G.with_pipeline(G.pipeline)
    assert not invariant.invariant and invariant.settings() == G.settings()
    invariant = FlowGenerator(G.pipeline, invariant=True, draw_batch=4)
    assert invariant.settings()['passes'] == 'batch-invariant' and 'draw_batch' not in invariant.settings()
    assert invariant.reference().invariant and invariant.with_pipeline(G.pipeline).invariant
    with pytest.raises(ValueError, match=r"stages \['occupancy', 'patches'\] lack them"):
        FlowGenerator(tiny_pipeline(), invariant=True)
    g = torch.randn([3, 1, 12, 12, 12], generator=torch.Generator().manual_seed(0))
    with batch_invariant():                                                     # The decode's smoothing: per sample.
        assert all(torch.equal(blur(g, 0.7)[k], blur(g[k : k + 1], 0.7)[0]) for k in range(3))


def test_checkpoint_loads_as_data_and_bad_files_fail_in_one_line(tmp_path):
    G = tiny_generator()
    path = str(tmp_path / 'flow.pt')
    flow_heads.save_flow(path, G.pipeline, TINY, dict(step=3))
    state = torch.load(path, weights_only=True)
    assert state['format'] == 'eg3d_rlhf.flow/1' and state['training'] == dict(step=3)
    assert state['config'] == flow_heads.check_config(TINY)
    loaded = flow_heads.load_flow(path, image_res=16)
    assert loaded.path == os.path.abspath(path) and loaded.steps == TINY['ode_steps']
    assert torch.equal(loaded.volumes([2], 0), G.volumes([2], 0))
    (tmp_path / 'text.pt').write_text('hello')
    torch.save(dict(format='other'), str(tmp_path / 'other.pt'))
    for name in ('text.pt', 'other.pt', 'missing.pt'):
        with pytest.raises(ValueError, match='flow checkpoint') as err:
            flow_heads.load_flow(str(tmp_path / name))
        assert '\n' not in str(err.value)
    with pytest.raises(ValueError, match='unknown flow config keys'):
        flow_heads.build_pipeline(dict(grids=3))

#----------------------------------------------------------------------------

def run_cli(args):
    return invoke(train_flow.main, args, expect=0)


def test_train_flow_dry_run_writes_nothing(tmp_path):
    outdir = tmp_path / 'run'
    result = run_cli(['--outdir', str(outdir), '--preset', 'tiny', '--config', '{"conditions": 3}', '--dry-run'])
    assert json.loads(result.output)['config']['conditions'] == 3
    assert not outdir.exists()


def test_train_flow_trains_snapshots_and_resumes(tmp_path):
    common = ['--preset', 'tiny', '--batch', '2', '--snap', '2', '--device', 'cpu', '--schedule', 'constant']
    run_cli(['--outdir', str(tmp_path / 'a'), *common, '--steps', '2', '--preview', '2'])
    assert {'options.json', 'stats.jsonl', 'flow-000002.pt', 'preview-000002.png', 'losses.png'} <= set(os.listdir(tmp_path / 'a'))
    run_cli(['--outdir', str(tmp_path / 'a'), *common, '--steps', '4', '--preview', '0',
        '--resume', str(tmp_path / 'a' / 'flow-000002.pt')])
    stats = [json.loads(line) for line in (tmp_path / 'a' / 'stats.jsonl').read_text().splitlines()]
    assert [s['step'] for s in stats] == [1, 2, 3, 4] and set(stats[0]) == {'step', 'loss/structure', 'loss/detail'}
    resumed = torch.load(str(tmp_path / 'a' / 'flow-000004.pt'), weights_only=True)
    assert resumed['training']['step'] == 4
    run_cli(['--outdir', str(tmp_path / 'b'), *common, '--steps', '4', '--preview', '0'])
    straight = torch.load(str(tmp_path / 'b' / 'flow-000004.pt'), weights_only=True)
    assert_same_weights(resumed, straight)                                  # Resuming repeats the same steps.


def assert_same_weights(x, y):
    for a, b in zip(x['state_dicts'], y['state_dicts']):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key])


def test_cosine_schedule_falls_to_zero_and_a_resumed_run_follows_it(tmp_path):
    assert train_flow.rate(2e-3, 'cosine', 0, 10) == 2e-3 and train_flow.rate(2e-3, 'constant', 9, 10) == 2e-3
    assert train_flow.rate(2e-3, 'cosine', 5, 10) == pytest.approx(1e-3)
    assert 0 < train_flow.rate(2e-3, 'cosine', 9, 10) < 0.03 * 2e-3
    common = ['--preset', 'tiny', '--batch', '2', '--snap', '2', '--device', 'cpu', '--steps', '4', '--preview', '0']
    run_cli(['--outdir', str(tmp_path / 'a'), *common])                      # Cosine by default.
    assert json.loads((tmp_path / 'a' / 'options.json').read_text())['schedule'] == 'cosine'
    run_cli(['--outdir', str(tmp_path / 'b'), *common, '--resume', str(tmp_path / 'a' / 'flow-000002.pt')])
    load = lambda run: torch.load(str(tmp_path / run / 'flow-000004.pt'), weights_only=True)
    assert_same_weights(load('a'), load('b'))                               # Killed at step 2, resumed: the same run.
    run_cli(['--outdir', str(tmp_path / 'c'), *common, '--schedule', 'constant'])
    assert not torch.equal(load('a')['state_dicts'][1]['out.bias'], load('c')['state_dicts'][1]['out.bias'])

#----------------------------------------------------------------------------
# tools/train_flow.py never runs into another run's folder without --force.

def test_train_flow_never_runs_into_another_runs_folder_without_force(tmp_path):
    import json
    from tools import train_flow
    common = ['--preset', 'tiny', '--batch', '2', '--snap', '2', '--device', 'cpu', '--preview', '0', '--steps', '2']
    run = lambda *extra: CliRunner().invoke(train_flow.main, ['--outdir', str(tmp_path / 'run'), *common, *extra])
    assert run().exit_code == 0
    before = files_under(tmp_path / 'run')
    for extra in ([], ['--seed', '1'], ['--resume', str(tmp_path / 'elsewhere.pt')]):
        if extra[:1] == ['--resume']:
            (tmp_path / 'elsewhere.pt').write_bytes((tmp_path / 'run' / 'flow-000002.pt').read_bytes())
        refused_in_one_line(run(*extra), f'{tmp_path / "run"} holds files already; pass --force')   # Before: mixed.
        assert files_under(tmp_path / 'run') == before
    assert run('--seed', '1', '--force').exit_code == 0                  # A new run in its place: its stats alone.
    steps = [json.loads(line)['step'] for line in (tmp_path / 'run' / 'stats.jsonl').read_text().splitlines()]
    assert steps == [1, 2] and digest(tmp_path / 'run' / 'flow-000002.pt') != before['flow-000002.pt']

#----------------------------------------------------------------------------
# Flow checkpoints: every weight finite, every config number finite and in range, or refused at load.

@pytest.fixture(scope='module')
def flow_state(tmp_path_factory):
    from eg3d_rlhf.generators import flow_heads
    from tests.helpers.flow import TINY
    path = str(tmp_path_factory.mktemp('flow') / 'flow.pt')
    flow_heads.save_flow(path, flow_heads.build_pipeline(TINY, init_seed=0), TINY)
    return flow_heads.read_flow(path)


@pytest.mark.parametrize('key, value, message', [
    ('cube_length', math.inf, 'cube_length must be a finite number in (0, 1000], got inf'),
    ('cube_length', 1e300, 'cube_length must be a finite number in (0, 1000], got 1e+300'),
    ('truncation', math.inf, 'truncation must be a finite number in (0, 8] (fine voxels), got inf'),
    ('truncation', 'wide', "truncation must be a finite number in (0, 8] (fine voxels), got 'wide'"),
    ('ode_steps', 10 ** 9, 'ode_steps must be an integer in [1, 10000], got 1000000000'),
    ('data_seed', -1, 'data_seed must be an integer in [0, 4294967295], got -1'),
    ('sampler', 'rk4', "unknown sampler 'rk4'"),
    ('weight', math.nan, 'stage 0 weight convs.0.weight holds nan or inf'),
    ('training.step', math.nan, 'training.step is nan; expected an integer >= 0'),
])
def test_a_flow_checkpoint_with_a_non_finite_or_absurd_number_is_refused_at_load(flow_state, tmp_path, key, value,
        message):
    from eg3d_rlhf.generators import flow_heads
    from tools import extract_sigma
    state = dict(flow_state, config=dict(flow_state['config']), state_dicts=[dict(sd) for sd in flow_state['state_dicts']])
    if key == 'weight':
        state['state_dicts'][0]['convs.0.weight'] = torch.full_like(state['state_dicts'][0]['convs.0.weight'], value)
    elif key == 'training.step':
        state['training'] = dict(step=value)
    else:
        state['config'][key] = value
    path = tmp_path / 'flow.pt'
    torch.save(state, path)
    with pytest.raises(ValueError, match='^' + f'{path}: '.replace('.', r'\.')) as err:   # Before: 0 faces everywhere.
        flow_heads.read_flow(str(path))
    assert message in str(err.value) and '\n' not in str(err.value)
    result = CliRunner().invoke(extract_sigma.main, ['--network', str(path), '--seeds', '0', '--res', '12', '--outdir',
        str(tmp_path / 'x')])
    refused_in_one_line(result, message)
    assert not (tmp_path / 'x').exists()

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
