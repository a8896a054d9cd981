"""Every tool takes a flow checkpoint: sample_bank, extract_sigma, shape_report, generator_demo, evaluate, flow_report."""

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf import cli
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.generators import flow_heads, registry
from eg3d_rlhf.generators.flow import noise_seed
from eg3d_rlhf.geometry.sigma import CubeGrid
from eg3d_rlhf.rewards.checkpoint import save_reward
from tests.helpers.cli import ran
from tests.helpers.flow import TINY
from tests.helpers.label import Running, judge, read_lines, request
from tests.helpers.rewards import slab_description, tiny_reward
from tools import annotate, evaluate, extract_sigma, flow_report, generator_demo, sample_bank, shape_report

pytestmark = pytest.mark.usefixtures('one_thread')


def save_tiny(path, seed=0):
    """A tiny flow checkpoint (random weights: blobs of noise, but every path runs) and its generator."""
    pipeline = flow_heads.build_pipeline(TINY, init_seed=seed)
    flow_heads.save_flow(str(path), pipeline, TINY)
    return str(path), flow_heads.load_flow(str(path))


@pytest.fixture
def flow_pt(tmp_path):
    return save_tiny(tmp_path / 'flow.pt')


def refused(tool, args):
    result = CliRunner().invoke(tool.main, [str(a) for a in args])
    assert result.exit_code != 0
    return result.output

#----------------------------------------------------------------------------

def test_flow_checkpoints_load_as_data_and_conditions_are_checked(flow_pt, tmp_path):
    path, G = flow_pt
    assert not registry.family_of_file(path).needs_trust and registry.family_of_file(cli.BUNDLED).needs_trust
    assert cli.network_path(path, trust_pickle=False) == path                # No --trust-pickle for data.
    assert cli.network_keys(path, [4, 5], None) == [(4, 0), (5, 0), (4, 1), (5, 1)]
    assert cli.network_keys(path, [4], [1]) == [(4, 1)] == G.keys([4], [1])
    assert cli.network_keys(cli.BUNDLED, [4], None) == [(4, None)]
    for network, conditions, message in ((path, [2], 'must lie in 0..1'), (cli.BUNDLED, [0], 'unconditional')):
        with pytest.raises(Exception, match=message):
            cli.network_keys(network, [0], conditions)
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'PK\x03\x04 not really a zip')
    with pytest.raises(Exception, match='junk.pt: not a flow checkpoint'):
        cli.load_generator(str(junk), 'cpu')


def test_sample_bank_writes_ids_with_conditions_and_noise_seeds(flow_pt, tmp_path):
    path, G = flow_pt
    bank_dir = tmp_path / 'bank'
    common = ['--network', path, '--res', 24, '--preview-res', 24, '--dtype', 'float32', '--outdir', bank_dir]
    assert 'write 6 samples' in ran(sample_bank.main, [*common, '--seeds', '0-2', '--dry-run']).output
    assert not bank_dir.exists()
    ran(sample_bank.main, [*common, '--seeds', '0-2', '--conditions', '1'])
    bank = Bank(str(bank_dir))
    assert bank.ids == ['c01-seed000000', 'c01-seed000001', 'c01-seed000002']
    meta = bank.meta('c01-seed000002')
    assert meta['condition'] == 1 and meta['noise_seeds'] == [noise_seed(2, 0), noise_seed(2, 1)]
    assert meta['asset'].startswith('asset.npz')
    assert bank.meta('c01-seed000002')['passes'] == 'batch-invariant'
    G = flow_heads.load_flow(path, invariant=True)                                # What the bank draws: an id alone.
    expected = G.field([2], 1).sample_grid(bank.grid('c01-seed000002'))[0].numpy()
    assert np.array_equal(bank.slab('c01-seed000002'), expected)
    plain = flow_heads.load_flow(path).field([2], 1).sample_grid(bank.grid('c01-seed000002'))[0].numpy()
    assert np.abs(expected - plain).max() < 1e-4                                  # One-id plain passes: rounding apart.
    asset = torch.from_numpy(bank.array('c01-seed000002', 'asset'))[None]         # What MSE_t needs, without redrawing.
    assert torch.equal(asset, G.volumes([2], 1))
    for kept, fresh in zip(G.pipeline.runs_from_asset([2], asset), G.pipeline.runs_from_asset([2], G.volumes([2], 1))):
        assert torch.equal(kept.x0, fresh.x0) and torch.equal(kept.x1, fresh.x1)
    assert 'must lie in 0..1' in refused(sample_bank, [*common, '--seeds', '0', '--conditions', '3'])

    ran(sample_bank.main, [*common, '--seeds', '0-2', '--conditions', '0'])          # Pairs that share a condition.
    labels = tmp_path / 'labels.jsonl'
    args = ['pairs', '--bank', bank_dir, '--annotator', 'oracle:nose', '--same-condition', '--out', labels]
    ran(annotate.main, [*args, '--pairs', 6])
    judged = [json.loads(line) for line in labels.read_text().splitlines()]
    assert len({frozenset((j['a'], j['b'])) for j in judged}) == 6
    assert all(j['a'][:3] == j['b'][:3] for j in judged)
    assert 'give only 6 within their conditions' in refused(annotate, [*args, '--pairs', 7])

    with Running(str(bank_dir), tmp_path / 'people.jsonl') as server:                # The labeling page serves it.
        status, data = request(server.port, 'GET', '/api/state')
        state = json.loads(data)
        pair = state['current']['a'], state['current']['b']
        assert status == 200 and all(i in Bank(str(bank_dir)) for i in pair)
        assert request(server.port, 'GET', f'/bank/{pair[0]}/preview_front.png')[0] == 200
        assert request(server.port, 'GET', f'/bank/{pair[0]}/asset.npz')[0] == 404
        judge(server.port, state, 'a')
    assert [(j['a'], j['b'], j['choice']) for j in read_lines(tmp_path / 'people.jsonl')] == [(*pair, 'a')]
    assert 'unconditional' in refused(sample_bank, ['--network', 'bundled', '--seeds', '0', '--conditions', '0',
        '--outdir', tmp_path / 'other', '--dry-run'])


def test_sample_bank_batches_do_not_change_a_byte_and_a_resumed_bank_matches(tmp_path):
    # The bundled model: the tiny preset's plain passes happen to round alike in any batch, so they would prove nothing.
    common = ['--network', 'bundled-flow', '--res', 24, '--preview-res', 24, '--conditions', '0,5']
    assert '5 ids per pass' in ran(sample_bank.main, [*common, '--seeds', 0, '--batch', 5, '--outdir', tmp_path / 'x',
        '--dry-run']).output
    ran(sample_bank.main, [*common, '--seeds', '0-2', '--batch', 1, '--outdir', tmp_path / 'alone'])
    ran(sample_bank.main, [*common, '--seeds', '1', '--batch', 2, '--outdir', tmp_path / 'resumed'])        # Interrupted.
    assert '4 samples written, 2 were already there' in ran(sample_bank.main, [*common, '--seeds', '0-2', '--outdir',
        tmp_path / 'resumed']).output
    alone, resumed = Bank(str(tmp_path / 'alone')), Bank(str(tmp_path / 'resumed'))
    assert alone.ids == resumed.ids and len(alone) == 6
    read = lambda bank, sample, name: open(bank.path(sample, name), 'rb').read()
    for sample in alone.ids:
        for name in ('sigma_slab.npy', 'image.png', 'preview_front.png', 'preview_three_quarter.png',
                'preview_profile.png', 'meta.json'):
            assert read(alone, sample, name) == read(resumed, sample, name), (sample, name)
        assert np.array_equal(alone.array(sample, 'asset'), resumed.array(sample, 'asset'))
    assert 'batch is for flow checkpoints' in refused(sample_bank, ['--network', 'bundled', '--seeds', '0', '--batch',
        2, '--outdir', tmp_path / 'eg3d'])


def test_extract_sigma_and_shape_report_take_a_flow(flow_pt, tmp_path):
    path, G = flow_pt
    ran(extract_sigma.main, ['--network', path, '--seeds', '3', '--conditions', '0', '--res', 12, '--outdir', tmp_path / 'x'])
    assert sorted(os.listdir(tmp_path / 'x')) == ['c00-seed000003.npy', 'c00-seed000003.ply']
    expected = G.field([3], 0).sample_grid(CubeGrid(12))[0].numpy()
    assert np.array_equal(np.load(tmp_path / 'x' / 'c00-seed000003.npy'), expected)
    ran(shape_report.main, ['--network', path, '--seeds', '0-1', '--res', 12, '--previews', 2, '--outdir', tmp_path / 's'])
    report = json.loads((tmp_path / 's' / 'report.json').read_text())
    assert [s['id'] for s in report['seeds']] == ['c00-seed000000', 'c00-seed000001', 'c01-seed000000', 'c01-seed000001']
    assert report['generator'] == 'flow' and report['num_seeds'] == 4


def test_generator_demo_takes_a_flow_and_its_condition(flow_pt, tmp_path):
    path, G = flow_pt
    result = ran(generator_demo.main, ['--network', path, '--seed', 2, '--condition', 1, '--res', 16, '--outdir', tmp_path / 'd'])
    assert json.loads(result.output.strip().splitlines()[-1])['id'] == 'c01-seed000002'
    assert {'image.png', 'previews.png', 'sigma_slab.npy', 'mesh.ply', 'summary.json'} <= set(os.listdir(tmp_path / 'd'))
    assert 'image_raw.png' not in os.listdir(tmp_path / 'd')                  # EG3D's raw image and depth only.
    assert 'must lie in 0..1' in refused(generator_demo, ['--network', path, '--condition', 2, '--outdir', tmp_path / 'e'])


def test_evaluate_compares_two_flows_at_the_same_ids(flow_pt, tmp_path):
    original, _ = flow_pt
    tuned, _ = save_tiny(tmp_path / 'tuned.pt', seed=1)
    reward = str(tmp_path / 'reward.pt')
    save_reward(reward, tiny_reward(seed=3), 'sigma', slab_description())
    out = tmp_path / 'report'
    ran(evaluate.main, ['--original', original, '--tuned', tuned, '--reward-model', reward, '--seeds', '0-2',
        '--conditions', '0,1', '--annotator', 'oracle:nose', '--temperature', 0, '--res', 24, '--outdir', out,
        '--device', 'cpu'])
    report = json.loads((out / 'report.json').read_text())
    assert report['reward']['seeds'] == 6 and report['preference']['pairs'] == 6
    assert 'conditions [0, 1]' in report['seeds']
    for side in ('original', 'tuned'):                                      # Stage consistency and diversity.
        iou = report['stage_consistency'][side]
        assert 0 <= iou['min'] <= iou['mean'] <= 1 and set(iou['per_condition']) == {'0', '1'}
        assert report['diversity'][side]['all'] > 0
    assert (out / 'stage_consistency.png').is_file()
    assert 'draw-batch is for flow checkpoints' in refused(evaluate, ['--original', 'bundled', '--tuned', 'bundled',
        '--reward-model', reward, '--seeds', '0', '--draw-batch', 2, '--outdir', tmp_path / 'r3'])
    assert 'differ in their conditions' in refused(evaluate, ['--original', original, '--tuned', 'bundled',
        '--reward-model', reward, '--seeds', '0', '--outdir', tmp_path / 'r2'])


def test_compare_draws_each_flow_sample_once(flow_pt, tmp_path):
    from eg3d_rlhf.analysis.compare import compare
    from eg3d_rlhf.rewards.checkpoint import load_reward
    path, _ = flow_pt
    generators = {side: flow_heads.load_flow(path, keep=3, draw_batch=2, image_res=16) for side in ('original', 'tuned')}
    drawn = []
    for G in generators.values():
        sample = G.pipeline.sample
        G.pipeline.sample = lambda seeds, *a, sample=sample: drawn.extend(seeds) or sample(seeds, *a)
    save_reward(str(tmp_path / 'reward.pt'), tiny_reward(seed=3), 'sigma', slab_description())
    reward = load_reward(str(tmp_path / 'reward.pt'))
    summary = compare(generators, reward, list(range(6)), str(tmp_path / 'c'), taste='nose', annotator_res=24)
    assert sorted(drawn) == sorted(list(range(6)) * 4)                   # 2 generators x 2 conditions, each id once.
    assert summary['stage_consistency']['mean_change'] == 0 and summary['diversity']['ratio_all'] == 1


def test_flow_report_measures_heads_stages_and_diversity(flow_pt, tmp_path):
    path, G = flow_pt
    out = tmp_path / 'fr'
    ran(flow_report.main, ['--network', path, '--seeds', '0-2', '--res', 12, '--slab-res', 24, '--data-heads', 3,
        '--columns', 2, '--outdir', out])
    report = json.loads((out / 'report.json').read_text())
    assert report['samples'] == 6 and 0 <= report['structure_iou']['min'] <= report['structure_iou']['mean'] <= 1
    d = report['diversity']
    assert d['generated']['all'] > 0 and d['training_data']['heads'] == 3 and d['ratio'] > 0
    assert {'report.html', 'conditions.png', 'largest_fraction.png', 'samples.jsonl'} <= set(os.listdir(out))
    lines = (out / 'samples.jsonl').read_text().splitlines()
    assert [json.loads(line)['id'] for line in lines][:2] == ['c00-seed000000', 'c00-seed000001']
    assert 'not a flow checkpoint' in refused(flow_report, ['--network', 'bundled', '--outdir', tmp_path / 'x'])


def test_structure_iou_is_one_when_the_detail_stage_keeps_the_plan():
    from eg3d_rlhf.analysis.flow_quality import diversity, structure_iou
    pipeline = flow_heads.build_pipeline(TINY, init_seed=0)
    sample = pipeline.sample([0], 1, steps=2, sampler='euler')
    detail = pipeline.stages[1]
    active = pipeline.stages[0].decode(sample.runs[0].x1, None)
    solid = detail.decode(torch.ones_like(sample.runs[1].x1) * -1, active)           # Every active voxel filled.
    sample.sigma = solid
    assert structure_iou(pipeline, sample)[0] == 1.0
    sample.sigma = torch.full_like(solid, flow_heads.EMPTY)                           # Nothing kept: IoU 0 (or empty plan).
    assert structure_iou(pipeline, sample)[0] == (0.0 if active.any() else 1.0)
    slabs = torch.tensor([[0.0, 0.0], [0.0, 2.0], [4.0, 0.0]])
    d = diversity(slabs, [0, 0, 1])
    assert d['within_condition'] == pytest.approx(np.sqrt(2))                          # |(0, 2)| / sqrt(2).
    assert d['all'] == pytest.approx((np.sqrt(2) + np.sqrt(8) + np.sqrt(10)) / 3)

#----------------------------------------------------------------------------


def test_the_bundled_flow_ships_small_loads_as_data_and_draws_a_head(tmp_path):
    assert os.path.getsize(cli.BUNDLED_FLOW) < 20 * 2**20
    state = flow_heads.read_flow(cli.BUNDLED_FLOW)                              # Safetensors, read as data.
    assert state['format'] == flow_heads.FORMAT and state['config'] == flow_heads.check_config({})
    assert 'write 16 samples' in ran(sample_bank.main, ['--network', 'bundled-flow', '--seeds', '0-1', '--outdir',
        tmp_path / 'bank', '--dry-run']).output
    G = cli.load_generator(cli.network_path('bundled-flow', trust_pickle=False), 'cpu')
    assert G.kind == 'flow' and G.conditions == 8 and G.path == cli.BUNDLED_FLOW
    sample = G.draw([0], 3)[0]
    volume = sample.sigma[0]
    inside = volume >= flow_heads.LEVEL
    assert 0.02 < inside.float().mean() < 0.5                                   # A solid, not a fog or nothing.
    assert not inside[0].any() and not inside[-1].any()                          # Inside the box.
    from eg3d_rlhf.analysis.flow_quality import structure_iou
    assert structure_iou(G.pipeline, sample)[0] > 0.7

@pytest.mark.slow
def test_the_bundled_flow_draws_whole_heads_about_as_smooth_as_its_training_heads(tmp_path):
    out = tmp_path / 'fr'
    ran(flow_report.main, ['--network', 'bundled-flow', '--seeds', '1000-1001', '--res', 64, '--slab-res', 64,
        '--data-heads', 16, '--outdir', out])
    report = json.loads((out / 'report.json').read_text())
    lump = report['lumpiness']
    assert report['one_head'] == report['samples'] == 16 and lump['resolution'] == 64
    assert 0.06 < lump['training_data'] < 0.1 and lump['ratio'] < 1.35, lump     # 1.22x on 104 samples (docs/results/2026-11-27-flows-notebook.md).

#----------------------------------------------------------------------------
# Surface lumpiness: a smooth surface reads low, speckle and steps read high (analysis/flow_quality.py).

def test_surface_lumpiness_tells_a_smooth_sphere_from_a_speckled_or_stepped_one():
    from eg3d_rlhf.analysis.flow_quality import surface_lumpiness
    R = 64
    voxel = 1 / (R - 1)
    x = np.linspace(-0.5, 0.5, R)
    sdf = 0.3 - np.sqrt(sum(a ** 2 for a in np.meshgrid(x, x, x, indexing='ij')))          # A sphere of radius 0.3.
    smooth = surface_lumpiness(sdf, voxel)
    speckled = surface_lumpiness(sdf + np.random.RandomState(0).normal(0, 0.5 * voxel, sdf.shape), voxel)
    stepped = surface_lumpiness(np.round(sdf / (4 * voxel)) * 4 * voxel, voxel)            # Terraces 4 voxels apart.
    assert smooth < 0.1 and speckled > 3 * smooth and stepped > 3 * smooth
    assert surface_lumpiness(2 * sdf, 2 * voxel) == pytest.approx(smooth)                  # In voxels: scale-free.
    assert np.isnan(surface_lumpiness(np.ones([8, 8, 8]), voxel))                          # No surface at all.
