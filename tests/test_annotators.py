"""Simulated annotators: geometric tastes on analytic volumes, the Bradley-Terry oracle and tools/annotate.py."""

import os

import numpy as np
import pytest
from click.testing import CliRunner

from eg3d_rlhf.data import annotators as A
from eg3d_rlhf.data import preferences
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.scores import read_scores
from eg3d_rlhf.geometry.sigma import slab_grid
from tests.helpers.banks import FACE, NOSES, TIP, ball_sdf, face_volume, sigma_from_sdf, world_points, write_bank
from tests.helpers.cli import digest, refused_in_one_line, tool
from tools import annotate

pytestmark = pytest.mark.usefixtures('one_thread')

CENTRE = (0.0, 0.04, 0.15)              # A ball well inside the slab.


@pytest.fixture(scope='module')
def grid():
    return slab_grid(64)                # Shape (32, 36, 33), world z from -0.10 to 0.40.


def analytic_prominence(grid, balls, centre_halfwidth=0.1, ring=(0.08, 0.12)):
    """nose_prominence's definition applied to the exact front surface of a union of balls."""
    xy = world_points(grid)[:, :, 0, :2]
    z = np.full(xy.shape[:2], -np.inf)
    for (cx, cy, cz), r in balls:
        d2 = (xy[..., 0] - cx) ** 2 + (xy[..., 1] - cy) ** 2
        z = np.maximum(z, np.where(d2 < r ** 2, cz + np.sqrt(np.maximum(r ** 2 - d2, 0)), -np.inf))
    central = np.where(np.abs(xy[..., 0]) < centre_halfwidth, z, -np.inf)
    tip = np.unravel_index(np.argmax(central), central.shape)
    dist = np.linalg.norm(xy - xy[tip], axis=-1)
    return z[tip] - np.median(z[(dist >= ring[0]) & (dist <= ring[1])])

#----------------------------------------------------------------------------
# Tastes.

def test_front_surface_of_a_ball(grid):
    (cx, cy, cz), r = CENTRE, 0.1
    z = A.front_surface(sigma_from_sdf(ball_sdf(world_points(grid), CENTRE, r)), grid, 10.0)
    xy = world_points(grid)[:, :, 0, :2]
    d2 = (xy[..., 0] - cx) ** 2 + (xy[..., 1] - cy) ** 2
    assert np.all(np.isnan(z[d2 > (r + 0.02) ** 2]))                        # Columns that miss the ball.
    inner = d2 < (0.7 * r) ** 2
    assert np.abs(z[inner] - (cz + np.sqrt(r ** 2 - d2[inner]))).max() < 2e-3


def test_nose_prominence_is_the_nose_height_over_the_face_around_it(grid):
    plain = A.nose_prominence(face_volume(grid), grid)
    assert plain == pytest.approx(analytic_prominence(grid, [FACE]), abs=2e-3)
    assert abs(plain) < 0.015                                               # Only the face's own curvature.
    values = []
    for nose in (0.03, 0.05, 0.07):
        value = A.nose_prominence(face_volume(grid, nose), grid)
        assert value == pytest.approx(analytic_prominence(grid, [FACE, (TIP, nose)]), abs=3e-3)
        assert value - plain == pytest.approx(nose, abs=0.01)              # Close to the bump's height.
        values.append(value)
    assert values[0] < values[1] < values[2]
    assert A.nose_prominence(np.full(grid.shape, -10, dtype=np.float32), grid) == 0.0   # No surface at all.


def test_roughness_grows_with_surface_noise(grid):
    p = world_points(grid) - np.asarray(CENTRE)
    r = np.linalg.norm(p, axis=-1)
    theta = np.arccos(np.clip(p[..., 1] / np.maximum(r, 1e-9), -1, 1))
    phi = np.arctan2(p[..., 2], p[..., 0])
    bumps = np.sin(16 * theta) * np.sin(16 * phi)                           # Ripples a few voxels wide.
    smooth, rough, rougher = (A.roughness(sigma_from_sdf(r - 0.15 - a * bumps), grid) for a in (0.0, 0.01, 0.02))
    assert rough > 1.2 * smooth and rougher > rough
    assert A.roughness(np.full(grid.shape, -10, dtype=np.float32), grid) == 1.0


def test_asymmetry_is_the_front_surface_against_its_mirror_image(grid):
    assert A.asymmetry(face_volume(grid), grid) < 1e-6                       # A centred sphere, and with a centred
    assert A.asymmetry(face_volume(grid, 0.05), grid) < 1e-6                 # nose: the mirror columns match.
    p = world_points(grid)
    shifted = lambda dx: sigma_from_sdf(np.minimum(ball_sdf(p, *FACE), ball_sdf(p, (dx, 0.0, 0.2), 0.05)))
    off = [A.asymmetry(shifted(dx), grid) for dx in (0.03, 0.08)]
    assert 0.001 < off[0] < off[1]                                          # A nose off to one side, more so.
    assert A.asymmetry(np.full(grid.shape, -10, dtype=np.float32), grid) == 1.0


def test_mirror_mismatch_is_the_inside_against_its_mirror_image_and_has_no_unit(grid):
    assert A.mirror_mismatch(face_volume(grid), grid) == 0.0                 # Centred: every voxel meets its mirror.
    assert A.mirror_mismatch(face_volume(grid, 0.05), grid) == 0.0
    p = world_points(grid)
    shifted = lambda dx: sigma_from_sdf(np.minimum(ball_sdf(p, *FACE), ball_sdf(p, (dx, 0.0, 0.2), 0.05)))
    off = [A.mirror_mismatch(shifted(dx), grid) for dx in (0.03, 0.08)]
    assert 0.001 < off[0] < off[1] < 1                                      # A nose off to one side, more so.
    assert A.mirror_mismatch(np.full(grid.shape, -10, dtype=np.float32), grid) == 1.0
    fine = slab_grid(128)                                                   # Fine enough that voxels hardly matter.
    q = world_points(fine) - np.asarray(CENTRE)
    lopsided = lambda k: sigma_from_sdf(k * np.minimum(ball_sdf(q / k, (0, 0, 0), 0.1), ball_sdf(q / k, (0.05, 0, 0.1), 0.035)))
    small, large = lopsided(1.0), lopsided(1.1)                             # The same head, 10% larger.
    assert A.asymmetry(large, fine) > 1.08 * A.asymmetry(small, fine)      # World units grow with the head;
    assert A.mirror_mismatch(large, fine) == pytest.approx(A.mirror_mismatch(small, fine), rel=0.05)   # a share does not.


def test_defects_count_floaters_by_area_and_handles(grid):
    p = world_points(grid)
    head = ball_sdf(p, CENTRE, 0.15)
    assert A.defects(sigma_from_sdf(head), grid) == pytest.approx(0, abs=1e-9)
    assert A.defects(face_volume(grid), grid) == pytest.approx(0, abs=1e-9)  # Cut by the slab, closed by closed_mesh.
    floater = ball_sdf(p, (0.18, 0.22, 0.3), 0.05)
    share = 0.05 ** 2 / (0.15 ** 2 + 0.05 ** 2)                             # Sphere areas go as r^2.
    assert A.defects(sigma_from_sdf(np.minimum(head, floater)), grid) == pytest.approx(share, rel=0.06)
    q = p - np.asarray(CENTRE)
    torus = np.sqrt((np.hypot(q[..., 0], q[..., 1]) - 0.12) ** 2 + q[..., 2] ** 2) - 0.045   # Hole along z.
    assert A.defects(sigma_from_sdf(torus), grid) == pytest.approx(0.05, abs=1e-9)
    assert A.defects(sigma_from_sdf(np.minimum(torus, floater)), grid) > 0.05
    assert A.defects(np.full(grid.shape, -10, dtype=np.float32), grid) == 1.0


def test_tastes_prefer_a_flat_face_a_smooth_surface_and_one_piece(grid):
    p = world_points(grid)
    head = ball_sdf(p, CENTRE, 0.15)
    pairs = {
        'nose': (face_volume(grid), face_volume(grid, 0.05)),
        'smooth': (sigma_from_sdf(head), sigma_from_sdf(head - 0.02 * np.sin(80 * p[..., 0]) * np.sin(80 * p[..., 1]))),
        'closed': (sigma_from_sdf(head), sigma_from_sdf(np.minimum(head, ball_sdf(p, (0.18, 0.22, 0.3), 0.05)))),
        'symmetric': (face_volume(grid, 0.05), sigma_from_sdf(np.minimum(ball_sdf(p, *FACE), ball_sdf(p, (0.06, 0.0, 0.2), 0.05)))),
        'size': (sigma_from_sdf(ball_sdf(p, CENTRE, 0.16)), sigma_from_sdf(head)),
        'proportions': (face_volume(grid), face_volume(grid, 0.05)),
    }
    assert set(pairs) == set(A.TASTES)
    for taste, (liked, disliked) in pairs.items():
        oracle = A.OracleAnnotator.from_slabs(taste, dict(liked=liked, disliked=disliked), grid, temperature=0)
        assert oracle.prefers('liked', 'disliked') == 'a' and oracle.prefers('disliked', 'liked') == 'b', taste

def test_head_size_is_the_cube_root_of_the_volume_inside_the_slab(grid):
    for r in (0.1, 0.15):
        ball = sigma_from_sdf(ball_sdf(world_points(grid), CENTRE, r))
        assert A.head_size(ball, grid) == pytest.approx((4 / 3 * np.pi) ** (1 / 3) * r, rel=0.02)
    assert A.head_size(np.full(grid.shape, -10.0), grid) == 0.0
    big, small = (sigma_from_sdf(ball_sdf(world_points(grid), CENTRE, r)) for r in (0.15, 0.14))
    nosed = sigma_from_sdf(np.minimum(ball_sdf(world_points(grid), CENTRE, 0.14),
        ball_sdf(world_points(grid), (0.0, 0.04, 0.29), 0.02)))
    # proportions = size - nose prominence: a bigger ball wins, a nose on the small one loses more than its volume adds.
    assert A.proportions(big, grid) > A.proportions(small, grid) > A.proportions(nosed, grid)


def test_size_tastes_saturate_past_the_training_range(grid, monkeypatch, tmp_path):
    import dataclasses
    from eg3d_rlhf.generators import flow_heads
    from eg3d_rlhf.synthetic import family, world
    assert A.SIZE_FAMILY.build_spread == max(p['build_spread'] for p in flow_heads.PRESETS.values())
    monkeypatch.setenv('EG3D_RLHF_CACHE', str(tmp_path))
    monkeypatch.setattr(A, 'SIZE_FAMILY', family.Family(build_spread=0.15, heads=8))   # 8 heads for speed.
    top = family.feature_range(A.SIZE_FAMILY, grid)[0][1]
    def slab(index, factor):
        sample = world.sample(7, index)
        return family.density_slab(dataclasses.replace(sample, head=dataclasses.replace(sample.head,
            scale=sample.head.scale * factor)), grid)
    # Inside the family's range the tastes read as before (the same scores, so the same ranking and labels) ...
    heads = [slab(i, f) for i, f in enumerate((0.9, 1.0, 1.05, 1.1))]
    assert max(A.head_size(v, grid) for v in heads) < top
    assert [A.TASTES['size'](v, grid, 10.0) for v in heads] == [A.head_size(v, grid) for v in heads]
    assert [A.TASTES['proportions'](v, grid, 10.0) for v in heads] == \
        [A.head_size(v, grid) - A.NOSE_WEIGHT * A.nose_prominence(v, grid) for v in heads]
    # ... and past it a larger head is no better: two heads beyond it tie.
    huge = dict(big=slab(0, 1.35), bigger=slab(0, 1.45))
    assert top < A.head_size(huge['big'], grid) < A.head_size(huge['bigger'], grid)
    assert A.TASTES['size'](huge['big'], grid, 10.0) == A.TASTES['size'](huge['bigger'], grid, 10.0) == top
    assert A.OracleAnnotator.from_slabs('size', huge, grid, temperature=0).prefers('big', 'bigger') == 'tie'
    nose = A.nose_prominence(huge['bigger'], grid)
    assert A.TASTES['proportions'](huge['bigger'], grid, 10.0) == top - A.NOSE_WEIGHT * nose

def test_natural_nose_peaks_at_the_worlds_flattest_nose(grid, monkeypatch, tmp_path):
    """Above the floor it is the 'nose' taste; below it each unit of prominence lost costs FLATTER_COST, so of faces
    with ever smaller noses the one at the floor is liked most. The floor is the family's least prominence."""
    from eg3d_rlhf.synthetic import family
    monkeypatch.setenv('EG3D_RLHF_CACHE', str(tmp_path))
    monkeypatch.setattr(A, 'NOSE_FAMILY', family.Family(heads=4))                      # 4 heads for speed.
    assert A.nose_floor(grid) == min(family.measures(A.NOSE_FAMILY, grid)[0][:, 1])
    faces = {f'nose{r:.2f}': face_volume(grid, r) for r in (0.02, 0.03, 0.04, 0.05, 0.06, 0.07)}
    prominence = {k: A.nose_prominence(v, grid) for k, v in faces.items()}
    floor = sorted(prominence.values())[2]                       # The third flattest face sits on the floor.
    monkeypatch.setattr(A, 'nose_floor', lambda g, level=10.0: floor)
    liked = {k: A.taste_function('natural-nose')(v, grid, 10.0) for k, v in faces.items()}
    for k, p in prominence.items():
        expected = -p if p >= floor else -p - A.FLATTER_COST * (floor - p)
        assert liked[k] == pytest.approx(expected, abs=1e-12)
    assert max(liked, key=liked.get) == min((k for k in faces if prominence[k] >= floor), key=prominence.get)
    above = [k for k in faces if prominence[k] > floor]          # Where the originals are, it judges as 'nose' does.
    assert sorted(above, key=liked.get) == sorted(above, key=lambda k: A.TASTES['nose'](faces[k], grid, 10.0))
    assert A.parse_annotator('oracle:natural-nose') == 'natural-nose' and 'natural-nose' not in A.TASTES

@pytest.mark.parametrize('taste, floor', [('flow-natural-nose', A.FLOW_NOSE_FLOOR),
    ('flow-natural-nose-p15', A.FLOW_NOSE_FLOOR_P15)])
def test_flow_natural_nose_peaks_at_its_floor_on_the_flows_scale(grid, taste, floor):
    """The same shape on the flow's scale: 'nose' above the floor, FLATTER_COST per unit below it."""
    faces = {f'nose{r:.3f}': face_volume(grid, r) for r in (0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05)}
    prominence = {k: A.nose_prominence(v, grid) for k, v in faces.items()}
    assert sum(p < floor for p in prominence.values()) >= 2 and sum(p > floor for p in prominence.values()) >= 2
    liked = {k: A.taste_function(taste)(v, grid, 10.0) for k, v in faces.items()}
    for k, p in prominence.items():
        expected = -p if p >= floor else -p - A.FLATTER_COST * (floor - p)
        assert liked[k] == pytest.approx(expected, abs=1e-12)
    above = sorted((k for k in faces if prominence[k] >= floor), key=prominence.get)
    below = sorted((k for k in faces if prominence[k] < floor), key=prominence.get)
    assert sorted(above, key=liked.get, reverse=True) == above            # Above: the flatter the better ...
    assert sorted(below, key=liked.get) == below                          # ... below: the flatter the worse.
    assert A.parse_annotator('oracle:' + taste) == taste and taste not in A.TASTES


#----------------------------------------------------------------------------
# The oracle.

def random_oracle(n=60, seed=0, **kwargs):
    scores = {f's{i:03d}': v for i, v in enumerate(np.random.RandomState(seed).normal(3, 5, size=n))}
    return A.OracleAnnotator('nose', scores, seed=seed, **kwargs), scores


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_parse_annotator():
    assert A.parse_annotator('oracle:smooth') == 'smooth'
    for bad in ('oracle:bogus', 'human:nose', 'nose', 'oracle:', ''):
        with pytest.raises(ValueError, match='unknown annotator .*use oracle:TASTE, TASTE one of nose, smooth, closed'):
            A.parse_annotator(bad)


def test_a_region_taste_reads_its_part_alone(grid):
    from eg3d_rlhf.synthetic import heads
    labels, names = heads.part_labels(grid)
    chin = labels == names.index('chin_jaw')
    assert A.parse_annotator('oracle:region:chin_jaw') == 'region:chin_jaw'
    for bad in ('oracle:region:', 'oracle:region:tail', 'oracle:region'):
        with pytest.raises(ValueError, match='oracle:region:PART .*chin_jaw'):
            A.parse_annotator(bad)
    taste = A.taste_function('region:chin_jaw')
    rng = np.random.default_rng(0)
    slab = np.where(rng.random(grid.shape) < 0.5, 30.0, -5.0).astype(np.float32)
    inside = np.count_nonzero(slab[chin] >= 10) / np.count_nonzero(chin)
    assert taste(slab, grid, 10.0) == pytest.approx(inside)
    elsewhere = slab.copy()
    elsewhere[~chin] = rng.choice([-5.0, 30.0], size=np.count_nonzero(~chin))       # Anything outside the part.
    assert taste(elsewhere, grid, 10.0) == taste(slab, grid, 10.0)
    fuller = slab.copy()
    fuller[tuple(np.argwhere(chin & (slab < 10))[0])] = 30.0                         # One more voxel of chin inside.
    assert taste(fuller, grid, 10.0) == pytest.approx(inside + 1 / np.count_nonzero(chin))
    oracle = A.OracleAnnotator.from_slabs('region:chin_jaw', dict(a=fuller, b=slab), grid, temperature=0)
    assert oracle.prefers('a', 'b') == 'a'


def test_scores_are_standardised():
    oracle, scores = random_oracle()
    z = np.array([oracle.z[k] for k in scores])
    assert z.mean() == pytest.approx(0, abs=1e-12) and z.std() == pytest.approx(1, rel=1e-12)
    raw = np.array(list(scores.values()))
    assert np.allclose(z, (raw - raw.mean()) / raw.std())
    flat = A.OracleAnnotator('nose', dict(a=2.0, b=2.0, c=2.0))
    assert flat.z == dict(a=0.0, b=0.0, c=0.0) and flat.prefers('a', 'b') == 'tie'


def test_temperature_zero_always_gives_the_noise_free_choice():
    oracle, scores = random_oracle(temperature=0)
    pairs = oracle.draw_pairs(scores, 500)
    for j in oracle.judgements(pairs):
        assert j.choice == j.extra['noise_free'] == ('a' if scores[j.a] > scores[j.b] else 'b')
        assert j.annotator == 'oracle:nose' and j.extra['temperature'] == 0
    tied = A.OracleAnnotator('nose', dict(a=1.0, b=1.0, c=0.0), temperature=0)
    assert [tied.judge('a', 'b') for _ in range(20)] == ['tie'] * 20 and tied.probabilities('a', 'c') == (1.0, 0.0, 0.0)


def test_agreement_follows_bradley_terry_and_falls_with_temperature():
    agreement = []
    for temperature in (0.25, 1.0, 4.0):
        oracle, _ = random_oracle(temperature=temperature, seed=1)
        pairs = oracle.draw_pairs(oracle.z, 1500) * 2
        agree = np.mean([oracle.judge(a, b) == oracle.prefers(a, b) for a, b in pairs])
        expected = np.mean([sigmoid(abs(oracle.z[a] - oracle.z[b]) / temperature) for a, b in pairs])
        assert agree == pytest.approx(expected, abs=0.03)                  # About 4 standard errors.
        pa, pb, pt = oracle.probabilities(*pairs[0])
        assert pa + pb == pytest.approx(1) and pt == pytest.approx(0, abs=1e-12)
        agreement.append(agree)
    assert agreement[0] > agreement[1] + 0.05 and agreement[1] > agreement[2] + 0.05 and agreement[2] > 0.5


def test_theta_above_one_gives_ties_and_one_gives_none():
    counts = {}
    for theta in (1.0, 3.0):
        oracle, _ = random_oracle(temperature=1.0, theta=theta, seed=2)
        pairs = oracle.draw_pairs(oracle.z, 1500) * 2
        choices = [oracle.judge(a, b) for a, b in pairs]
        counts[theta] = choices.count('tie')
        expected = np.mean([oracle.probabilities(a, b)[2] for a, b in pairs])
        assert counts[theta] / len(pairs) == pytest.approx(expected, abs=0.035)   # About 4 standard errors.
    assert counts[1.0] == 0 and counts[3.0] > 600
    oracle = A.OracleAnnotator('nose', dict(a=0.0, b=1.0), temperature=1.0, theta=3.0)
    assert oracle.probabilities('a', 'a')[2] == pytest.approx((3 ** 2 - 1) / (1 + 3) ** 2)   # Rao-Kupper, equal scores.
    with pytest.raises(AssertionError):
        A.OracleAnnotator('nose', dict(a=0.0, b=1.0), theta=0.5)


def test_draw_pairs_gives_distinct_unordered_pairs():
    oracle, scores = random_oracle(n=20, seed=3)
    pairs = oracle.draw_pairs(list(scores), 190)                            # Every pair of 20 samples.
    assert len({frozenset(p) for p in pairs}) == 190 and all(a != b for a, b in pairs)
    assert any(a < b for a, b in pairs) and any(a > b for a, b in pairs)    # Random sides.
    again, _ = random_oracle(n=20, seed=3)
    assert again.draw_pairs(reversed(list(scores)), 190) == pairs           # Seeded; the input order does not matter.
    with pytest.raises(ValueError, match='191 pairs asked for, but 20 samples give only 190'):
        oracle.draw_pairs(scores, 191)


def test_good_bad_at_temperature_zero_splits_at_the_median():
    oracle, scores = random_oracle(n=11, seed=4, temperature=0)
    labels = oracle.good_bad(scores)
    median = np.median(list(scores.values()))
    assert labels == {k: int(v > median) for k, v in sorted(scores.items())} and sum(labels.values()) == 5
    noisy, _ = random_oracle(n=400, seed=4, temperature=100.0)
    assert 0.4 < np.mean(list(noisy.good_bad(noisy.z).values())) < 0.6      # So much noise: a coin flip.

#----------------------------------------------------------------------------
# tools/annotate.py on a hand-made bank of faces with noses of ten sizes (the `faces` fixture, tests/conftest.py).

annotate_cli = tool(annotate.main)


def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_annotate_pairs_writes_valid_judgements_and_scores(faces, tmp_path):
    out, scores_out = tmp_path / 'labels.jsonl', tmp_path / 'scores.csv'
    result = ok(annotate_cli('pairs', '--bank', faces, '--annotator', 'oracle:nose', '--pairs', 30, '--out', out,
        '--scores-out', scores_out))
    ids = Bank(faces).ids
    judgements = preferences.load_judgements(str(out), known_ids=ids)
    assert len(judgements) == 30 and all(j.annotator == 'oracle:nose' and j.extra['temperature'] == 0.5 for j in judgements)
    agree = np.mean([j.choice == j.extra['noise_free'] for j in judgements])
    assert f'30 judgements by oracle:nose; {100 * agree:.1f}% agree' in result.output and '0 ties' in result.output
    scores = read_scores(str(scores_out), known_ids=ids)
    assert list(scores) == ids
    oracle = A.OracleAnnotator.from_slabs('nose', Bank(faces).slabs(), slab_grid(32))
    assert scores == pytest.approx(oracle.z, abs=1e-12)
    assert sorted(ids, key=scores.get) == sorted(ids, key=NOSES.get, reverse=True)   # The smallest nose is liked most.
    for j in judgements:
        assert j.extra['noise_free'] == ('a' if NOSES[j.a] < NOSES[j.b] else 'b')


def test_annotate_pairs_seed_temperature_theta(faces, tmp_path):
    def judged(name, *args):
        ok(annotate_cli('pairs', '--bank', faces, '--annotator', 'oracle:nose', '--pairs', 45, '--out', tmp_path / name, *args))
        return [(j.a, j.b, j.choice, j.extra['noise_free']) for j in preferences.load_judgements(str(tmp_path / name))]

    first, again, other = judged('a.jsonl', '--seed', 5), judged('b.jsonl', '--seed', 5), judged('c.jsonl', '--seed', 6)
    assert first == again and first != other
    assert {frozenset(j[:2]) for j in first} == {frozenset(j[:2]) for j in other}   # All 45 pairs either way.
    exact = judged('d.jsonl', '--temperature', 0)
    assert all(choice == noise_free for _, _, choice, noise_free in exact)
    noisy = judged('e.jsonl', '--temperature', 3)
    assert any(choice != noise_free for _, _, choice, noise_free in noisy)
    assert all(choice != 'tie' for _, _, choice, _ in noisy)
    ties = judged('f.jsonl', '--temperature', 1, '--theta', 4)
    assert sum(choice == 'tie' for _, _, choice, _ in ties) >= 10             # About half at theta 4.


def test_annotate_level(faces, tmp_path):
    # No surface at level 100: every prominence is 0, so every score is 0 and every noise-free choice a tie.
    scores_out = tmp_path / 's.csv'
    ok(annotate_cli('pairs', '--bank', faces, '--annotator', 'oracle:nose', '--pairs', 10, '--level', 100,
        '--temperature', 0, '--out', tmp_path / 'l.jsonl', '--scores-out', scores_out))
    assert set(read_scores(str(scores_out)).values()) == {0.0}
    assert {j.choice for j in preferences.load_judgements(str(tmp_path / 'l.jsonl'))} == {'tie'}


def test_annotate_good_bad(faces, tmp_path):
    good, bad, scores_out = tmp_path / 'good.txt', tmp_path / 'bad.txt', tmp_path / 'scores.csv'
    result = ok(annotate_cli('good-bad', '--bank', faces, '--annotator', 'oracle:nose', '--temperature', 0,
        '--good', good, '--bad', bad, '--scores-out', scores_out))
    assert '5 good and 5 bad samples' in result.output
    by_nose = sorted(NOSES, key=NOSES.get)
    assert sorted(preferences.read_id_list(str(good))) == sorted(by_nose[:5])
    assert sorted(preferences.read_id_list(str(bad))) == sorted(by_nose[5:])
    assert good.read_text().startswith('# good samples by oracle:nose, temperature 0')
    assert list(read_scores(str(scores_out))) == Bank(faces).ids
    labels = []
    for seed in (1, 1, 2):
        ok(annotate_cli('good-bad', '--bank', faces, '--annotator', 'oracle:nose', '--temperature', 2, '--seed', seed,
            '--good', good, '--bad', bad, '--force'))
        labels.append(preferences.import_good_bad(str(good), str(bad)))
    assert labels[0] == labels[1] and labels[0] != labels[2] and set(labels[0]) == set(NOSES)


def test_annotate_good_bad_closed_taste_and_level(tmp_path):
    g = slab_grid(32)
    p = world_points(g)
    head = ball_sdf(p, CENTRE, 0.15)
    floaters = {'b': 0.04, 'd': 0.05, 'f': 0.06}
    slabs = {k: sigma_from_sdf(np.minimum(head, ball_sdf(p, (0.17, 0.22, 0.3), floaters[k])) if k in floaters else head)
        for k in 'abcdef'}
    root = write_bank(tmp_path / 'bank', slabs, 32)
    good, bad = tmp_path / 'good.txt', tmp_path / 'bad.txt'
    ok(annotate_cli('good-bad', '--bank', root, '--annotator', 'oracle:closed', '--temperature', 0, '--good', good, '--bad', bad))
    assert preferences.read_id_list(str(good)) == ['a', 'c', 'e'] and preferences.read_id_list(str(bad)) == ['b', 'd', 'f']
    ok(annotate_cli('good-bad', '--bank', root, '--annotator', 'oracle:closed', '--temperature', 0, '--level', 50,
        '--good', good, '--bad', bad, '--force'))                                       # No surface: all alike, none above the median.
    assert preferences.read_id_list(str(good)) == [] and len(preferences.read_id_list(str(bad))) == 6


def test_annotate_errors_and_dry_run(faces, tmp_path):
    out = tmp_path / 'l.jsonl'
    base = ['--bank', faces, '--annotator', 'oracle:nose']
    result = annotate_cli('pairs', *base, '--pairs', 46, '--out', out)
    assert result.exit_code == 2 and '46 pairs asked for, but 10 samples give only 45' in result.output
    result = annotate_cli('pairs', '--bank', faces, '--annotator', 'oracle:pretty', '--pairs', 5, '--out', out)
    assert result.exit_code == 2 and "unknown annotator 'oracle:pretty'" in result.output
    result = annotate_cli('good-bad', '--bank', faces, '--annotator', 'person:x', '--good', out, '--bad', out)
    assert result.exit_code == 2 and "unknown annotator 'person:x'" in result.output
    for bad in (['--pairs', 0], ['--pairs', 5, '--theta', 0.5], ['--pairs', 5, '--temperature', -1]):
        result = annotate_cli('pairs', *base, *bad, '--out', out)
        assert result.exit_code == 2 and 'is not in the range' in result.output
    result = annotate_cli('pairs', '--bank', tmp_path / 'nowhere', '--annotator', 'oracle:nose', '--pairs', 5, '--out', out)
    assert result.exit_code == 1 and 'no such bank folder' in result.output
    result = ok(annotate_cli('pairs', *base, '--pairs', 45, '--out', out, '--scores-out', tmp_path / 's.csv', '--dry-run'))
    assert 'would score 10 samples' in result.output and 'write 45 judgements' in result.output
    result = ok(annotate_cli('good-bad', *base, '--good', tmp_path / 'g.txt', '--bad', tmp_path / 'b.txt',
        '--scores-out', tmp_path / 's.csv', '--dry-run'))
    assert 'would label 10 samples' in result.output
    assert os.listdir(tmp_path) == []

#----------------------------------------------------------------------------
# People's labels are never replaced without --force.

@pytest.mark.parametrize('args', [
    ['pairs', '--pairs', 5, '--out', '{labels}'],
    ['pairs', '--pairs', 5, '--out', '{fresh}', '--scores-out', '{labels}'],
    ['good-bad', '--good', '{labels}', '--bad', '{fresh}'],
    ['good-bad', '--good', '{fresh}', '--bad', '{labels}'],
    ['pairs', '--pairs', 5, '--out', '{labels}', '--dry-run'],
])
def test_annotate_never_replaces_a_file_without_force(faces, tmp_path, args):
    labels = tmp_path / 'labels.jsonl'
    labels.write_text('{"a": "x", "b": "y", "choice": "a", "annotator": "alice", "time": "2026-11-22T10:00:00"}\n')
    before = digest(labels)
    names = dict(labels=labels, fresh=tmp_path / 'fresh.txt')
    argv = [str(a).format(**names) for a in args[:1] + ['--bank', faces, '--annotator', 'oracle:nose'] + args[1:]]
    refused_in_one_line(CliRunner().invoke(annotate.main, argv), f'{labels} exists; pass --force to replace it')
    assert digest(labels) == before and not (tmp_path / 'fresh.txt').exists()
    if '--dry-run' not in args:
        result = CliRunner().invoke(annotate.main, argv + ['--force'])
        assert result.exit_code == 0, result.output
        assert digest(labels) != before
