"""finetune/panel_cache.py: a run that starts where another did reads the panel's start evidence back, unchanged."""

import os

import numpy as np
import pytest
import torch

from eg3d_rlhf.analysis import collateral
from eg3d_rlhf.finetune import panel, panel_cache
from tests.helpers.eg3d import tiny_generator


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty panel cache of its own; returns its folder."""
    monkeypatch.setenv('EG3D_RLHF_PANEL_CACHE', str(tmp_path / 'panel-cache'))
    return tmp_path / 'panel-cache'


def started(rewards, run_dir, G):
    """A panel of 4 seeds (2 measured for collateral on a 32 cube) that recorded its start; torch's random state is
    checked to be as it was."""
    os.makedirs(run_dir)
    p = panel.RewardPanel(str(run_dir), rewards['sigma'], '3-6', collateral_seeds=2, collateral_res=32, batch=2)
    state = torch.get_rng_state()
    p.record(G, 0)
    assert torch.equal(torch.get_rng_state(), state)                    # Computed or read, the run's steps are the same.
    return p


def assert_same_start(a, b):
    np.testing.assert_array_equal(a.rewards[0], b.rewards[0])
    np.testing.assert_array_equal(a.start, b.start)
    assert a.before[0] == b.before[0] and a.before[2] == b.before[2]
    np.testing.assert_array_equal(a.before[1], b.before[1])
    assert a.curves.rows == b.curves.rows and len(a.curves) == 1                # The proxy-gold start too.
    np.testing.assert_array_equal(a.start_distance_slabs, b.start_distance_slabs)


def test_a_second_run_reads_the_start_evidence_the_first_computed(rewards, cache, tmp_path, monkeypatch):
    G = tiny_generator().eval()
    first = started(rewards, tmp_path / 'first', G)
    assert len(os.listdir(cache)) == 1 and collateral.well_formed(first.before[2], 2)
    monkeypatch.setattr(collateral, 'measure_drawn', lambda *a, **k: pytest.fail('measured again'))
    monkeypatch.setattr(panel.RewardPanel, 'draw', lambda *a, **k: pytest.fail('scored again'))
    assert_same_start(first, started(rewards, tmp_path / 'second', G))


def test_a_damaged_entry_is_computed_and_written_again(rewards, cache, tmp_path):
    G = tiny_generator().eval()
    first = started(rewards, tmp_path / 'first', G)
    entry = cache / os.listdir(cache)[0]
    (entry / 'rewards.npy').write_bytes(b'not an array')
    again = started(rewards, tmp_path / 'again', G)
    assert_same_start(first, again)
    assert np.load(entry / 'rewards.npy').shape == (4,)                # Written again, whole.
    np.save(entry / 'rewards.npy', np.full(4, np.nan))                  # Non-finite numbers are no evidence either.
    assert_same_start(first, started(rewards, tmp_path / 'nan', G))
    assert np.isfinite(np.load(entry / 'rewards.npy')).all()


def test_the_key_changes_with_the_generator_the_settings_and_the_code(monkeypatch):
    G = tiny_generator().eval()
    key = panel_cache.entry_key(G, seeds=[3, 4])
    assert panel_cache.entry_key(G, seeds=[3, 4]) == key and len(key) == 64
    assert panel_cache.entry_key(G, seeds=[3, 5]) != key
    with torch.no_grad():
        G.decoder.net[-1].bias[0] += 1e-6
    moved = panel_cache.entry_key(G, seeds=[3, 4])
    assert moved != key
    monkeypatch.setattr(panel_cache, '_code_digest', '0' * 64)
    assert panel_cache.entry_key(G, seeds=[3, 4]) != moved


def test_a_cache_that_cannot_be_written_costs_only_the_time(rewards, tmp_path, monkeypatch):
    (tmp_path / 'file').write_text('a file where the cache folder should be')
    monkeypatch.setenv('EG3D_RLHF_PANEL_CACHE', str(tmp_path / 'file'))
    p = started(rewards, tmp_path / 'run', tiny_generator().eval())
    assert p.rewards[0].shape == (4,) and np.isfinite(p.rewards[0]).all()
