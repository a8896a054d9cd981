"""Plausibility: a generator's training family drawn and cached, samples against its range, and the alarm it raises."""

import dataclasses

import numpy as np
import pytest
import torch

from eg3d_rlhf.analysis import collateral, plausibility
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_grid
from eg3d_rlhf.synthetic import family, world

GRID = slab_grid(64, crop=SlabCrop())
FAMILY = family.Family()                   # The world's heads: the bundled EG3D generator's data.


def grown(count, factor, seed=7):
    """Density slabs [count, *GRID.shape] of world heads `seed`, 0.. grown by `factor` about their origin."""
    samples = [world.sample(seed, i) for i in range(count)]
    samples = [dataclasses.replace(s, head=dataclasses.replace(s.head, scale=s.head.scale * factor)) for s in samples]
    return torch.from_numpy(np.stack([family.density_slab(s, GRID) for s in samples]))


@pytest.fixture(scope='module', autouse=True)
def own_cache(tmp_path_factory):
    """Families are kept in a cache dir of this module's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('EG3D_RLHF_CACHE', str(tmp_path_factory.mktemp('cache')))
        yield


@pytest.fixture(scope='module')
def heads():
    """(slabs of 16 heads as the world draws them, the same heads grown by 30%, their measure()s)."""
    slabs, big = grown(16, 1.0), grown(16, 1.3)
    return slabs, big, collateral.measure(slabs, GRID), collateral.measure(big, GRID)

#----------------------------------------------------------------------------

def test_a_family_is_drawn_coarse_to_fine_as_dense_evaluation_draws_it():
    from eg3d_rlhf.data import annotators
    sample = world.sample(0, 3)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in GRID.shape], indexing='ij'), -1).reshape(-1, 3)
    points = torch.as_tensor(GRID.index_to_world(ijk), dtype=torch.float32)
    with torch.no_grad():
        dense, sdf = (f([sample], points)[0].reshape(GRID.shape).numpy() for f in (world.density, world.sdf))
    drawn = family.density_slab(sample, GRID)
    assert np.array_equal(drawn >= 10, dense >= 10)
    near = np.abs(sdf) <= GRID.voxel_size                                  # Where a level crossing is refined.
    assert np.abs(drawn[near] - dense[near]).max() < 1e-4
    for taste in (annotators.head_size, annotators.nose_prominence):
        assert taste(drawn, GRID) == pytest.approx(taste(dense, GRID), abs=1e-6)


def test_a_familys_measures_are_kept_in_the_cache_dir_and_drawn_again_when_damaged(monkeypatch):
    small = family.Family(seed=3, heads=2)
    features, inside = family.measures(small, GRID)
    assert features.shape == (2, 2) and inside.shape == (2, -(-GRID.num_points // 8))
    family._measured.clear()                                                # A new process: the disk answers.
    monkeypatch.setattr(family, 'draw', lambda *a: pytest.fail('drawn again'))
    again = family.measures(small, GRID)
    assert np.array_equal(again[0], features) and np.array_equal(again[1], inside)
    key = next(iter(family._measured))
    with open(family.entry_paths(key)[0], 'wb') as f:
        f.write(b'not an array')
    family._measured.clear()
    monkeypatch.undo()
    assert np.array_equal(family.measures(small, GRID)[0], features)        # Damaged: drawn and kept again.


@pytest.mark.slow
def test_heads_grown_past_the_training_range_raise_the_alarm(heads):
    slabs, big, before, after = heads
    result = collateral.compare(before, after, trained='size')
    result['plausibility'] = collateral.plausibility(slabs, big, GRID, FAMILY, measures=(before, after))
    fit = result['plausibility']
    assert fit['out_before'] == 0 and fit['out_after'] == 16 and fit['rise'] > plausibility.RISE
    assert fit['residual']['after'] > fit['residual']['before'] + 0.1     # Unlike every training head.
    (low, high), size = fit['measures']['head_size']['range'], after['truth']['head_size']
    assert min(size) > high > low and fit['measures']['head_size']['out_after'] == 16
    assert fit['counted'] == list(plausibility.MEASURES)                   # The world's own heads reproduce all three.
    sentence = collateral.alarm(result, 1.0)
    assert "16 of 16 samples out of the training family's range" in sentence
    rows = {r[0]: r for r in collateral.tables(result)[1][2]}
    row = next(r for name, r in rows.items() if name.startswith('out of the training family'))
    assert row[1] == f'{fit["out_before"]} of 16' and row[2] == '16 of 16' and row[3].endswith('ALARM')
    entries = collateral.row_entries(dict(alarm=sentence, collateral=result))
    assert (entries['out_of_range_after'], entries['out_of_range_samples']) == (16, 16)
    assert 'out of range' in collateral.row_cells(entries)[0]
    assert any(s.startswith('out of range') for s in collateral.clears_bar(entries, 'size')[1])


@pytest.mark.slow
def test_heads_within_the_training_range_raise_no_alarm(heads):
    slabs, _, before, _ = heads
    near = grown(16, 1.02)                                                  # Grown a little, within the family.
    after = collateral.measure(near, GRID)
    result = collateral.compare(before, after, trained='size')
    result['plausibility'] = fit = collateral.plausibility(slabs, near, GRID, FAMILY, measures=(before, after))
    assert fit['out_before'] == fit['out_after'] == 0 and not collateral.implausible(fit)
    assert abs(fit['residual']['change']) < 0.05
    assert 'range' not in (collateral.alarm(result, 1.0) or '')
    entries = collateral.row_entries(dict(alarm=None, collateral=result))
    assert not any(s.startswith('out of range') for s in collateral.clears_bar(entries, 'size')[1])


def test_the_family_of_a_generator_is_its_training_data():
    class Flow:
        config = dict(data_seed=5, build_spread=0.15, mirror=True)
    assert family.of_generator(Flow()) == family.Family(seed=5, build_spread=0.15)
    assert family.of_generator(object()) == family.Family()                  # EG3D: the world's heads, seed 0.
    grown_by = [s.head.scale / world.sample(5, i).head.scale for i, s in enumerate(family.Family(5, 0.15, 4).samples())]
    assert all(0.85 <= g <= 1.15 for g in grown_by) and len(set(grown_by)) == 4

#----------------------------------------------------------------------------
