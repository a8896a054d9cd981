"""Evaluation: reward-change and win-rate statistics, PSNR/SSIM, Fréchet and KID maths, and tools/evaluate.py."""

import json
import os

import numpy as np
import PIL.Image
import pytest
import scipy.stats
import torch
from click.testing import CliRunner

from eg3d_rlhf.analysis import evaluation, image_metrics
from eg3d_rlhf.analysis.compare import SIDES, compare
from eg3d_rlhf.data.preferences import Judgement, write_judgements
from eg3d_rlhf.generators import flow_heads
from eg3d_rlhf.generators.base import seed_ranges
from eg3d_rlhf.generators.eg3d import EG3DGenerator
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_grid
from eg3d_rlhf.rewards.checkpoint import load_reward, save_reward
from eg3d_rlhf.synthetic import demo
from tests.helpers.cli import digest, invoke, refused_in_one_line
from tests.helpers.evaluate import before_after_halves, save_feature_network, save_pair
from tests.helpers.rewards import slab_description, tiny_reward
from tools import evaluate

pytestmark = pytest.mark.usefixtures('one_thread')

#----------------------------------------------------------------------------
# Statistics.

def test_reward_change_counts_mean_interval_and_slope():
    before = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    after = 0.5 * before + 3.0 + np.array([0.1, -0.1, 0.0, 0.1, -0.1])
    rc = evaluation.reward_change(before, after)
    delta = after - before
    assert rc['seeds'] == 5 and rc['rose'] == int((delta > 0).sum()) and rc['fell'] == int((delta < 0).sum())
    assert rc['mean_delta'] == pytest.approx(delta.mean())
    half = scipy.stats.t.ppf(0.975, 4) * delta.std(ddof=1) / np.sqrt(5)
    assert rc['mean_delta_ci95'] == pytest.approx([delta.mean() - half, delta.mean() + half])
    assert rc['fit_slope'] == pytest.approx(np.polyfit(before, after, 1)[0])
    assert rc['paired_t_p'] == pytest.approx(scipy.stats.ttest_rel(after, before).pvalue)
    assert rc['cohens_d'] == pytest.approx(delta.mean() / delta.std(ddof=1))   # d_z: in sds of the change itself.
    assert np.isnan(evaluation.reward_change([1.0, 2.0], [2.0, 3.0])['cohens_d'])   # Every seed moved alike.


def test_rank_agreement_counts_concordant_orders():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    same = evaluation.rank_agreement(a, a ** 3)                             # Same order, other scale.
    assert same['spearman'] == pytest.approx(1) and same['kendall_tau'] == pytest.approx(1)
    swapped = evaluation.rank_agreement(a, np.array([2.0, 1.0, 3.0, 4.0, 6.0, 5.0]))
    # Two swapped neighbours of six: rho = 1 - 6 * (1 + 1 + 1 + 1) / (6 * 35); tau = (13 - 2) / 15.
    assert swapped['spearman'] == pytest.approx(1 - 24 / 210) and swapped['kendall_tau'] == pytest.approx(11 / 15)
    lo, hi = swapped['spearman_ci95']
    assert lo < swapped['spearman'] < hi <= 1
    assert evaluation.rank_agreement(a, -a)['spearman'] == pytest.approx(-1)
    assert np.isnan(evaluation.rank_agreement(a, np.ones(6))['spearman'])


def test_win_rate_drops_ties_and_uses_the_exact_binomial_test():
    choices = ['tuned'] * 18 + ['original'] * 2 + ['tie'] * 3
    w = evaluation.win_rate(choices)
    assert (w['wins'], w['losses'], w['ties'], w['pairs']) == (18, 2, 3, 23)
    assert w['win_rate'] == pytest.approx(0.9)
    # Two-sided exact p of 18 or more (or 2 or fewer) successes in 20 fair coin flips, summed by hand.
    from math import comb
    p = 2 * sum(comb(20, k) for k in range(18, 21)) / 2**20
    assert w['binomial_p'] == pytest.approx(p)
    lo, hi = w['wilson95']
    assert lo < 0.9 < hi and lo > 0.68


def test_seed_ranges():
    assert seed_ranges('3,5-7') == [3, 5, 6, 7]
    with pytest.raises(ValueError, match='empty range'):
        seed_ranges('7-5')
    with pytest.raises(ValueError, match='cannot parse'):
        seed_ranges('a')

#----------------------------------------------------------------------------
# Image metrics.

def test_psnr_and_ssim_of_identical_noisy_and_different_images():
    rng = np.random.RandomState(0)
    a = rng.randint(0, 256, size=(2, 32, 32, 3)).astype(np.uint8)
    noise = np.clip(a.astype(int) + rng.randint(-4, 5, size=a.shape), 0, 255).astype(np.uint8)
    psnr, ssim = image_metrics.psnr_ssim(a, a)
    assert np.all(np.isinf(psnr)) and np.allclose(ssim, 1)
    psnr, ssim = image_metrics.psnr_ssim(a, noise)
    mse = np.mean((a.astype(float) - noise.astype(float)) ** 2, axis=(1, 2, 3))
    assert psnr == pytest.approx(10 * np.log10(255**2 / mse))
    assert np.all(ssim < 1) and np.all(ssim > 0.9)
    _, ssim_far = image_metrics.psnr_ssim(a, 255 - a)
    assert np.all(ssim_far < ssim)


def test_frechet_distance_of_gaussians_has_the_closed_form():
    # Diagonal covariances commute: the distance is |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2.
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert image_metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected)
    # A rotated (non-diagonal) pair: the distance is invariant to rotating both.
    q, _ = np.linalg.qr(np.random.RandomState(1).randn(3, 3))
    rotated = image_metrics.frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert rotated == pytest.approx(expected)


def test_frechet_distance_has_a_finite_value_where_the_plain_square_root_has_none(monkeypatch):
    # Singular covariances (a handful of images, many features) can make LAPACK's sqrtm return inf or nan for S1 S2;
    # EG3D's formula then wrote null into metric-*.jsonl. The ridged product's root stands in for it.
    import scipy.linalg
    plain = scipy.linalg.sqrtm
    calls = []
    def failing_first(a, *args, **kwargs):
        calls.append(a)
        return np.full_like(a, np.inf) if len(calls) == 1 else plain(a, *args, **kwargs)
    monkeypatch.setattr(scipy.linalg, 'sqrtm', failing_first)
    s1, s2 = np.diag([1.0, 4.0, 0.0]), np.diag([4.0, 1.0, 0.0])
    distance = image_metrics.frechet_distance(np.zeros(3), s1, np.ones(3), s2)
    assert len(calls) == 2 and np.isfinite(distance)
    assert distance == pytest.approx(3 + (1 - 2) ** 2 + (2 - 1) ** 2, abs=1e-5)


def test_fid_and_kid_from_samples_of_two_gaussians():
    rng = np.random.RandomState(0)
    x = rng.randn(4000, 4)
    y = rng.randn(4000, 4) * 2 + 1
    assert image_metrics.fid_from_features(x, y) == pytest.approx(4 * 1 + 4 * (2 - 1) ** 2, rel=0.05)
    assert abs(image_metrics.fid_from_features(x, rng.randn(4000, 4))) < 0.05
    same = image_metrics.kid_from_features(x, rng.randn(4000, 4), num_subsets=5, max_subset_size=500)
    different = image_metrics.kid_from_features(x, y, num_subsets=5, max_subset_size=500)
    assert abs(same) < 0.05 and different > 10 * abs(same)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
@pytest.mark.parametrize('kind', ['export', 'torchscript'])
def test_local_feature_networks_load_and_need_trust(tmp_path, kind):
    path = save_feature_network(str(tmp_path / 'features.pt2'), kind)
    with pytest.raises(image_metrics.InceptionError, match='archive with pickled parts; loading it can run code'):
        image_metrics.load_inception(path)                  # An export archive unpickles its weights: trust first.
    extract = image_metrics.load_inception(path, trust_pickle=True)
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    f = image_metrics.features(extract, images, batch=2)
    u8 = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8).float()
    assert f.shape == (3, 12) and np.allclose(f, torch.nn.functional.adaptive_avg_pool2d(u8, 2).flatten(1).numpy())
    pkl = tmp_path / 'inception.pkl'
    pkl.write_bytes(b'not really a pickle')
    with pytest.raises(image_metrics.InceptionError, match='trust'):
        image_metrics.load_inception(str(pkl))

#----------------------------------------------------------------------------
# tools/evaluate.py on tiny generators (the `tiny_pair` fixture, tests/conftest.py).

@pytest.fixture(scope='module')
def visible_pair(tmp_path_factory):
    """As tiny_pair, but sigma (about -0.5..0.5 in a tiny G) raised to straddle the previews' level 10, so both
    generators have surfaces to show, and they differ."""
    return save_pair(tmp_path_factory.mktemp('visible'), (10.0, 10.2))


def run_evaluate(args):
    return invoke(evaluate.main, args)


def test_evaluate_writes_the_report(tiny_pair, tmp_path):
    original, tuned, reward = tiny_pair
    out = tmp_path / 'report'
    result = run_evaluate(['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', reward,
        '--seeds', '0-5', '--annotator', 'oracle:nose', '--temperature', '0', '--res', '32', '--outdir', out,
        '--device', 'cpu', '--batch', '4'])
    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['reward']['seeds'] == 6 and report['reward']['rose'] + report['reward']['fell'] <= 6
    pref = report['preference']
    assert pref['pairs'] == 6 and pref['wins'] + pref['losses'] + pref['ties'] == 6
    assert pref['noise_free']['wins'] == pref['wins']                  # Temperature 0: the noise-free choice.
    assert 0 < report['images']['mean_psnr_db'] < 100 and report['images']['mean_ssim'] < 1
    assert report['fid_kid'].startswith('not computed')
    for name in ('report.html', 'images.png', 'geometry.png', 'reward_scatter.png', 'reward_histograms.png', 'reward_deltas.png'):
        assert (out / name).stat().st_size > 0, name
    assert 'not computed' in (out / 'report.html').read_text()


def test_evaluate_same_generator_changes_nothing(tiny_pair, tmp_path):
    original, _, reward = tiny_pair
    result = run_evaluate(['--original', original, '--tuned', original, '--trust-pickle', '--reward-model', reward,
        '--seeds', '0-2', '--outdir', tmp_path, '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / 'report.json').read_text())
    assert report['reward']['mean_delta'] == 0 and report['reward']['rose'] == 0
    assert report['images']['identical'] == 3 and report['preference'].startswith('not computed')


def test_evaluate_win_rate_from_labels(tiny_pair, tmp_path):
    original, tuned, reward = tiny_pair
    labels = tmp_path / 'labels.jsonl'
    t = '2026-01-01T00:00:00+00:00'
    write_judgements(str(labels), [
        Judgement('tuned-seed000000', 'original-seed000000', 'a', 'ann', t),
        Judgement('original-seed000001', 'tuned-seed000001', 'b', 'ann', t),
        Judgement('original-seed000002', 'tuned-seed000002', 'a', 'ann', t),
        Judgement('original-seed000000', 'tuned-seed000000', 'tie', 'bob', t)])
    result = run_evaluate(['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', reward,
        '--seeds', '0-2', '--labels', labels, '--outdir', tmp_path / 'r', '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    pref = json.loads((tmp_path / 'r' / 'report.json').read_text())['preference']
    assert (pref['wins'], pref['losses'], pref['ties']) == (2, 1, 1)


def test_evaluate_fid_kid_with_a_local_feature_network(tiny_pair, tmp_path):
    original, tuned, reward = tiny_pair
    net = save_feature_network(str(tmp_path / 'features.pt2'), 'export')
    result = run_evaluate(['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', reward,
        '--seeds', '0-15', '--inception', net, '--outdir', tmp_path / 'r', '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    fk = json.loads((tmp_path / 'r' / 'report.json').read_text())['fid_kid']
    assert fk['reference'] == 'original generator' and fk['tuned']['fid'] > 0 and np.isfinite(fk['tuned']['kid'])


@pytest.mark.parametrize('extra, message', [
    (['--annotator', 'oracle:beauty'], 'unknown annotator'),
    (['--annotator', 'oracle:nose', '--labels', 'x.jsonl'], 'not both'),
    (['--inception', '/nonexistent/inception.pkl'], 'never downloaded'),
    (['--seeds', '9-3'], 'empty range'),
    (['--temperature', '-1'], '--temperature'),
    (['--res', '4'], '--res'),
    (['--batch', '0'], '--batch'),
])
def test_evaluate_rejects_bad_input(tiny_pair, tmp_path, extra, message):
    original, tuned, reward = tiny_pair
    result = run_evaluate(['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', reward,
        '--outdir', tmp_path / 'r', '--device', 'cpu', *extra])
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / 'r').exists()


def test_evaluate_refuses_untrusted_pickles_and_bad_reward_models(tiny_pair, tmp_path):
    original, tuned, reward = tiny_pair
    result = run_evaluate(['--original', original, '--tuned', tuned, '--reward-model', reward, '--outdir', tmp_path])
    assert result.exit_code != 0 and '--trust-pickle' in result.output
    result = run_evaluate(['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', original,
        '--outdir', tmp_path])
    assert result.exit_code != 0 and 'not a reward checkpoint' in result.output


def test_evaluate_dry_run_writes_nothing(tiny_pair, tmp_path):
    original, tuned, reward = tiny_pair
    result = run_evaluate(['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', reward,
        '--annotator', 'oracle:nose', '--outdir', tmp_path / 'r', '--dry-run'])
    assert result.exit_code == 0 and 'would compare' in result.output and 'not computed' in result.output
    assert not (tmp_path / 'r').exists()

#----------------------------------------------------------------------------


def test_evaluate_fid_kid_against_dataset_images(tiny_pair, tmp_path):
    from tests.helpers.train import make_zip_dataset
    original, tuned, reward = tiny_pair
    data = make_zip_dataset(tmp_path / 'reals.zip', count=8)
    net = save_feature_network(str(tmp_path / 'features.pt2'), 'export')
    result = run_evaluate(['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', reward,
        '--seeds', '0-7', '--inception', net, '--data', data, '--outdir', tmp_path / 'r', '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    fk = json.loads((tmp_path / 'r' / 'report.json').read_text())['fid_kid']
    assert fk['reference'] == 'dataset' and set(fk) == {'reference', 'original', 'tuned'}
    assert all(np.isfinite(fk[side][k]) for side in ('original', 'tuned') for k in ('fid', 'kid'))
    result = run_evaluate(['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', reward,
        '--inception', net, '--data', tmp_path / 'missing.zip', '--outdir', tmp_path / 'r2', '--device', 'cpu'])
    assert result.exit_code != 0 and '--data: ' in result.output and 'does not exist' in result.output
    result = run_evaluate(['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', reward,
        '--data', data, '--outdir', tmp_path / 'r2', '--device', 'cpu'])
    assert result.exit_code != 0 and 'give --inception too' in result.output and not (tmp_path / 'r2').exists()

#----------------------------------------------------------------------------
# Before/after geometry pictures: front and profile previews, original columns left of tuned, and the orbit GIF.

def test_evaluate_draws_before_after_previews_and_an_orbit(visible_pair, tmp_path):
    original, tuned, reward = visible_pair
    out = tmp_path / 'report'
    result = run_evaluate(['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', reward,
        '--seeds', '0-5', '--annotator', 'oracle:nose', '--res', '32', '--outdir', out, '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    before, after = before_after_halves(out / 'before_after.png', rows=4)     # 4 of the 6 seeds.
    for row in range(4):
        assert not np.array_equal(before[row * 128:(row + 1) * 128], after[row * 128:(row + 1) * 128]), row
    # The rows are the seeds whose worst taste fell furthest, worst first; row 2 shows the original's front and
    # profile views of its seed's slab on the annotator's grid (drawn in one pass with the other seeds).
    shown = json.loads((out / 'report.json').read_text())['before_after_rows']
    assert len(shown) == 4 and len({r['id'] for r in shown}) == 4
    assert [r['change_sd'] for r in shown] == sorted(r['change_sd'] for r in shown)
    G = EG3DGenerator.load(original, trust=True)
    grid = slab_grid(32, cube_length=G.cube_length, crop=SlabCrop())
    slab = G.sigma_grid(range(6), grid)[int(shown[2]['id'][4:])].numpy()
    views = preview.render_views(slab, grid, views=('front', 'profile'), resolution=128)
    np.testing.assert_array_equal(before[256:384], np.concatenate([views['front'], views['profile']], axis=1))
    page = (out / 'report.html').read_text()
    assert 'src="before_after.png"' in page and 'src="orbit.gif"' in page
    with PIL.Image.open(out / 'orbit.gif') as gif:
        assert gif.n_frames == 24 and gif.size == (preview.LABEL_LEFT + 2 * 96, preview.LABEL_TOP + 96)
        frames = []
        for k in (0, 6):                                                 # Yaw 0 (the face), then 90 degrees.
            gif.seek(k)
            frames.append(np.asarray(gif.convert('L'))[preview.LABEL_TOP:, preview.LABEL_LEFT:])
    assert not np.array_equal(frames[0], frames[1])
    assert all(not np.array_equal(f[:, :96], f[:, 96:]) for f in frames)     # Original and tuned differ.


def test_evaluate_before_after_of_one_generator_has_equal_halves(visible_pair, tmp_path):
    original, _, reward = visible_pair
    result = run_evaluate(['--original', original, '--tuned', original, '--trust-pickle', '--reward-model', reward,
        '--seeds', '0-2', '--res', '32', '--outdir', tmp_path, '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    before, after = before_after_halves(tmp_path / 'before_after.png', rows=3)
    np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize('taste', ['nose', None])
def test_compare_reuses_its_slabs_for_the_previews(visible_pair, tmp_path, taste):
    original, tuned, reward = visible_pair
    generators = {side: EG3DGenerator.load(path, trust=True) for side, path in zip(SIDES, (original, tuned))}
    drawn = []
    for side, G in generators.items():
        sigma_grid = G.sigma_grid
        G.sigma_grid = lambda seeds, *a, side=side, sigma_grid=sigma_grid: (drawn.append((side, list(seeds)))
            or sigma_grid(seeds, *a))
    compare(generators, load_reward(reward), list(range(6)), str(tmp_path), taste=taste, annotator_res=24)
    # Every seed's slab is drawn once per side (the collateral measures them all, the annotator judges them) and
    # the previews show four of them.
    assert drawn == [(side, list(range(6))) for side in SIDES]
    before_after_halves(tmp_path / 'before_after.png', rows=4)


def test_compare_shows_flows_before_and_after_from_one_draw(tmp_path):
    from tests.helpers.flow import TINY
    generators = {side: flow_heads.build_generator(flow_heads.build_pipeline(TINY, init_seed=0), TINY, image_res=16)
        for side in SIDES}
    with torch.no_grad():                   # A fresh flow's velocities are 0; the tuned detail stage's is 0.5.
        generators['tuned'].pipeline.stages[1].velocity.out.bias.fill_(0.5)
    drawn = []
    for G in generators.values():
        sample = G.pipeline.sample
        G.pipeline.sample = lambda seeds, *a, sample=sample: drawn.extend(seeds) or sample(seeds, *a)
    save_reward(str(tmp_path / 'reward.pt'), tiny_reward(seed=3), 'sigma', slab_description())
    compare(generators, load_reward(str(tmp_path / 'reward.pt')), [0, 1, 2], str(tmp_path / 'c'), annotator_res=24)
    assert sorted(drawn) == sorted([0, 1, 2] * 4)                      # 2 generators x 2 conditions, each id once.
    before, after = before_after_halves(tmp_path / 'c' / 'before_after.png', rows=4)
    assert not np.array_equal(before, after)
    assert 'src="before_after.png"' in (tmp_path / 'c' / 'report.html').read_text()

#----------------------------------------------------------------------------
# Code runs only with consent: a feature archive (torch.export, TorchScript) needs --trust-pickle.

@pytest.mark.filterwarnings('ignore::DeprecationWarning')
@pytest.mark.parametrize('kind', ['export', 'torchscript'])
def test_evaluate_refuses_a_feature_archive_without_trust(tmp_path, kind):
    net = save_feature_network(str(tmp_path / 'features.pt2'), kind)
    before = digest(tmp_path / 'features.pt2')
    result = CliRunner().invoke(evaluate.main, ['--original', 'bundled', '--tuned', 'bundled', '--reward-model',
        os.path.join(demo.CHECKPOINTS, 'reward-sigma-nose.safetensors'), '--inception', net, '--outdir', str(tmp_path / 'r'), '--device', 'cpu'])
    refused_in_one_line(result, 'archive with pickled parts; loading it can run code stored in it, so pass --trust-pickle')
    assert digest(tmp_path / 'features.pt2') == before and not (tmp_path / 'r').exists()
