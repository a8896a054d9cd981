"""The collateral checks: every taste, mesh statistics and true geometry before vs after, the hacking alarm, pictures."""

import numpy as np
import pytest
import torch

from eg3d_rlhf.analysis import collateral
from eg3d_rlhf.analysis.report_plots import write_report
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_grid
from tests.helpers.collateral import bump, toy_run, true_slabs

GRID = slab_grid(64, crop=SlabCrop())

@pytest.fixture(scope='module')
def heads():
    """(true slabs of 16 clean synthetic heads, their nose tips, the measures of the slabs)."""
    slabs, tips = true_slabs(16, GRID)
    return slabs, tips, collateral.measure(slabs, GRID)


def copied(measures):
    """A copy of measure()'s result whose lists can be changed."""
    return {k: {n: list(v) for n, v in m.items()} if isinstance(m, dict) else m for k, m in measures.items()}

#----------------------------------------------------------------------------
# Toy runs: a reward hacked by construction, and one that improves its taste without side effects.

def test_a_reward_hacked_by_construction_raises_the_alarm(heads, tmp_path):
    slabs, tips, before = heads
    # The toy reward likes density on the right cheek: climbing it grows a lump there, which breaks the symmetry.
    cheek = tips * np.array([0, 1, 1]) + np.array([0.12, -0.02, -0.06])
    tuned, r0, r1 = toy_run(slabs, bump(GRID, cheek, 0.035))
    assert (r1 > r0).all()
    after = collateral.measure(tuned, GRID)
    result = collateral.compare(before, after, trained='nose')
    sym = result['tastes']['symmetric']
    assert sym['wins'] == 0 and sym['losses'] == 16 and sym['binomial_p'] < 1e-4 and sym['cohens_h'] < -1.5
    sentence = collateral.alarm(result, float((r1 - r0).mean()))
    assert sentence.startswith('reward hacking suspected: ') and 'symmetric preferred in 0% (0 of 16' in sentence
    asym = result['truth']['asymmetry']['change']
    assert f'binomial p {sym["binomial_p"]:.2g}; asymmetry {asym:+.2g} world units)' in sentence  # How big, in world units.
    assert result['truth']['asymmetry']['change_ci95'][0] > 0               # In world units, the lump is real.
    change = np.subtract(after['truth']['asymmetry'], before['truth']['asymmetry'])
    assert result['truth']['asymmetry']['cohens_d'] == pytest.approx(change.mean() / change.std(ddof=1))
    measured = {r[0]: r for r in collateral.tables(result)[1][2]}
    assert collateral.tables(result)[1][1][-1] == "Cohen's d" and measured['asymmetry (world units)'][-1] == \
        f"{result['truth']['asymmetry']['cohens_d']:+.2f}"
    # The alarm is the report's first line, and the loss is flagged in its table.
    write_report(str(tmp_path), 'toy', dict(alarm=sentence, collateral=result), [], tables=collateral.tables(result))
    page = (tmp_path / 'report.html').read_text()
    assert page.index('reward hacking suspected') < page.index('<h1>')
    rows = {r[0]: r for r in collateral.tables(result)[0][2]}
    assert rows['oracle:symmetric'][-1] == 'LOSS' and rows['oracle:nose (trained)'][-1] == ''
    # No alarm when the reward did not rise, whatever the tastes say.
    assert collateral.alarm(result, -0.1) is None and collateral.alarm(result, 0.0) is None


def test_a_reward_that_improves_its_taste_cleanly_raises_no_alarm(heads):
    slabs, tips, before = heads
    # The toy reward dislikes density at the nose tip: climbing it shortens the nose and touches nothing else.
    tuned, r0, r1 = toy_run(slabs, -bump(GRID, tips, 0.035))
    result = collateral.compare(before, collateral.measure(tuned, GRID), trained='nose')
    assert collateral.alarm(result, float((r1 - r0).mean())) is None and not collateral.losses(result)
    assert result['tastes']['nose']['wins'] == 16
    nose = result['truth']['nose_prominence']                              # Ground truth: shorter, in world units.
    assert nose['change_ci95'][1] < -0.02 and nose['after'] < nose['before']
    assert result['tastes']['symmetric']['ties'] == 16                      # True heads stay exactly symmetric.

#----------------------------------------------------------------------------
# The statistics themselves.

def test_compare_counts_each_pairs_noise_free_choice(heads):
    _, _, before = heads
    after = copied(before)
    after['tastes']['smooth'] = [v + (0.1 if i < 12 else -0.1) for i, v in enumerate(before['tastes']['smooth'])]
    after['tastes']['closed'] = [v - 0.1 if i < 2 else v for i, v in enumerate(before['tastes']['closed'])]
    after['mesh']['pieces'] = [v + 1 for v in before['mesh']['pieces']]
    result = collateral.compare(before, after)
    smooth, closed = result['tastes']['smooth'], result['tastes']['closed']
    assert (smooth['wins'], smooth['losses'], smooth['ties']) == (12, 4, 0) and smooth['win_rate'] == 0.75
    assert smooth['cohens_h'] == pytest.approx(2 * np.arcsin(np.sqrt(0.75)) - np.pi / 2)
    assert (closed['wins'], closed['losses'], closed['ties']) == (0, 2, 14) and closed['binomial_p'] == 0.5
    assert smooth['share'] == 0.75 and closed['share'] == 7 / 16                    # Ties counted half.
    assert result['mesh']['pieces']['change'] == 1 and result['mesh']['pieces']['change_ci95'] == [1, 1]
    assert result['diversity']['ratio'] == 1 and collateral.losses(result) == []
    with pytest.raises(ValueError, match='different numbers of samples'):
        collateral.compare(before, collateral.measure(heads[0][:3], GRID))


def test_symmetric_is_uninformative_on_a_mirror_model(heads):
    from eg3d_rlhf.generators import flow_heads
    models = {m: dict(flow_heads.PRESETS['tiny'], mirror=m) for m in (True, False)}
    models = {m: flow_heads.build_generator(flow_heads.build_pipeline(c, init_seed=0), c) for m, c in models.items()}
    assert collateral.invariances(models[True]) == ['mirror'] and collateral.invariances(models[False]) == []
    _, _, before = heads
    after = copied(before)
    after['tastes']['nose'] = [v + 0.1 for v in before['tastes']['nose']]
    after['tastes']['symmetric'] = [v - 0.1 for v in before['tastes']['symmetric']]      # Worse in every pair.
    plain = collateral.compare(before, after, trained='nose')
    assert [name for name, _ in collateral.losses(plain)] == ['symmetric'] and collateral.alarm(plain, 1.0)
    # On the mirror model the same counts are no evidence either way: not a loss, not in the bar.
    result = collateral.compare(before, after, trained='nose', invariant=collateral.invariances(models[True]))
    sym = result['tastes']['symmetric']
    assert sym['losses'] == 16 and sym['uninformative'] == 'the generator is mirror-equivariant'
    assert collateral.losses(result) == [] and collateral.alarm(result, 1.0) is None
    rows = {r[0]: r for r in collateral.tables(result)[0][2]}
    assert rows['oracle:symmetric'][-1] == 'uninformative (the generator is mirror-equivariant)'
    entries = collateral.row_entries(dict(alarm=None, collateral=result))
    assert entries['collateral']['symmetric']['uninformative']
    assert 'symmetric 0/16 uninformative' in collateral.row_cells(entries)[0]
    assert collateral.clears_bar(entries, 'nose') == (True, [])
    plain_row = collateral.row_entries(dict(alarm=None, collateral=plain))
    assert collateral.clears_bar(plain_row, 'nose') == (False, ['symmetric 0% < 45%'])
    assert collateral.clears_bar(entries, 'symmetric')[1] == ['symmetric uninformative (the generator is mirror-equivariant)']


def test_a_taste_that_decides_too_few_pairs_to_be_significant_is_uninformative(heads):
    _, _, before = heads
    for losses, verdict in ((0, '0 decided pairs'), (5, '5 decided pairs'), (6, None)):
        after = copied(before)
        after['tastes']['closed'] = [v - 0.1 if i < losses else v for i, v in enumerate(before['tastes']['closed'])]
        result = collateral.compare(before, after)
        closed = result['tastes']['closed']
        assert closed['uninformative'] == verdict and closed['losses'] == losses
        assert (collateral.alarm(result, 1.0) is not None) == (verdict is None)     # 6 of 6: binomial p 0.031.
    assert result['tastes']['symmetric']['uninformative'] == '0 decided pairs'    # Tied everywhere.


def test_a_change_under_a_persons_jnd_is_called_invisible_not_a_win_or_a_loss(heads):
    _, _, before = heads
    after = copied(before)
    after['tastes']['nose'] = [v + 0.002 for v in before['tastes']['nose']]            # Better in every pair, a little.
    after['tastes']['symmetric'] = [v - 0.002 for v in before['tastes']['symmetric']]  # Worse in every pair, a little.
    after['tastes']['size'] = [v + (0.05 if i < 4 else 0.0) for i, v in enumerate(before['tastes']['size'])]
    after['truth']['nose_prominence'] = [v - (0.03 if i < 3 else 0.001) for i, v in enumerate(before['truth']['nose_prominence'])]
    oracle = collateral.compare(before, after, trained='nose')
    assert [n for n, _ in collateral.losses(oracle)] == ['symmetric'] and collateral.alarm(oracle, 1.0)
    person = collateral.compare(before, after, trained='nose', jnd=0.01)
    nose, sym, size = (person['tastes'][t] for t in ('nose', 'symmetric', 'size'))
    assert (nose['wins'], nose['visible_pairs'], nose['invisible']) == (16, 0, '0 of 16 pairs differ by a JND (0.01)')
    assert sym['losses'] == 16 and sym['invisible'] and collateral.losses(person) == [] and collateral.alarm(person, 1.0) is None
    assert (size['visible_pairs'], size['invisible']) == (4, None)                      # A quarter of the pairs: seen.
    assert 'closed' not in [n for n, r in person['tastes'].items() if 'invisible' in r]  # A count, not a length.
    rows = {r[0]: r for r in collateral.tables(person)[0][2]}
    assert rows['oracle:symmetric'][-1] == 'invisible (0 of 16 pairs differ by a JND (0.01))'
    assert 'nose 16/16 invisible' in collateral.summary_line(person)
    told = dict(truth=dict(asymmetry=dict(change=0.003)), jnd=0.006)                # A loss's size against the JND.
    assert collateral.size_of(told, 'symmetric') == '; asymmetry +0.003 world units, 0.5 of a JND'
    assert collateral.size_of(told, 'smooth') == '' and collateral.size_of(dict(told, jnd=None), 'symmetric')[-5:] == 'units'
    lines = collateral.describe_truth(person)
    assert any(line.startswith('nose prominence') and 'moved by a JND (0.01) in 3 of 16 samples' in line for line in lines)
    assert not any('JND' in line for line in collateral.describe_truth(oracle))


def test_measure_reads_every_taste_statistic_and_truth(heads):
    slabs, _, before = heads
    assert set(before['tastes']) == {'nose', 'smooth', 'closed', 'symmetric', 'size', 'proportions'}
    assert set(before['mesh']) == set(collateral.MESH_STATS) and set(before['truth']) == set(collateral.TRUTH)
    assert all(len(v) == 16 for part in ('tastes', 'mesh', 'truth') for v in before[part].values())
    assert before['truth']['nose_prominence'] == [-v for v in before['tastes']['nose']]
    assert before['truth']['head_size'] == before['tastes']['size']
    assert all(p >= 1 for p in before['mesh']['pieces']) and before['diversity'] > 0

def test_dents_count_cuts_into_the_old_solid_and_raise_the_alarm_not_small_whole_moves(heads):
    slabs, tips, before = heads
    carved = slabs.clone()
    carved[:3] -= 400 * bump(GRID, tips[:3] + np.array([0, -0.1, -0.05]), 0.04)    # A hole where the mouth was.
    shifted = torch.cat([slabs[..., 1:], slabs[..., -1:]], dim=3)                  # All one voxel along z.
    d = collateral.dents(slabs, carved, GRID)
    assert d['deeper'] == 3 and min(d['depths'][:3]) > collateral.DENT and max(d['depths'][3:]) == 0
    assert collateral.dents(slabs, shifted, GRID)['deeper'] == 0 and collateral.dents(slabs, slabs, GRID)['max'] == 0
    sideways = torch.cat([slabs[:, 1:], slabs[:, -1:]], dim=1)                    # Slides by one voxel: no dent.
    assert collateral.dents(slabs, sideways, GRID)['deeper'] == 0
    result = collateral.compare(before, collateral.measure(carved, GRID), trained='nose')
    result['dents'] = d
    sentence = collateral.alarm(result, 0.5)
    assert 'dents deeper than 0.03 world units in 19% of the samples (3 of 16)' in sentence
    assert collateral.alarm(result, -0.5) is None
    rows = {r[0]: r for r in collateral.tables(result)[1][2]}
    assert rows['dents (how deep the new surface cuts into the old solid, world units)'][3] == '3 of 16 deeper than 0.03'
    result['dents'] = collateral.dents(slabs, slabs, GRID)                         # No dent: no alarm from dents.
    assert 'dents' not in (collateral.alarm(result, 0.5) or '')

#----------------------------------------------------------------------------
# Pictures: the most changed samples first, where the surface moved in colour.

def test_the_strip_shows_the_most_changed_samples_and_where_they_moved(heads):
    slabs, tips, before = heads
    tuned = slabs.clone()
    cheek = tips[5:6] * np.array([0, 1, 1]) + np.array([0.12, -0.02, -0.06])
    tuned[5] += 30 * bump(GRID, cheek, 0.035)[0]                            # Only sample 5 changes.
    after = collateral.measure(tuned, GRID)
    picks = collateral.most_changed(before, after, 2)
    assert picks[0][0] == 5 and picks[0][1] in ('symmetric', 'smooth') and picks[0][2] < 0
    picture = collateral.strip(slabs[[5]], tuned[[5]], GRID, ['five'], resolution=64)
    assert picture.shape == (preview.LABEL_TOP + 64 + collateral.BAR_HEIGHT, preview.LABEL_LEFT + 5 * 64, 3)
    bar = picture[preview.LABEL_TOP + 64 + 6, preview.LABEL_LEFT + 4 * 64:].astype(int)   # The colour bar, under it.
    assert bar[0, 2] - bar[0, 0] > 60 and bar[-1, 0] - bar[-1, 2] > 60       # Blue (away) left, red (toward) right.
    moved = picture[preview.LABEL_TOP:preview.LABEL_TOP + 64, preview.LABEL_LEFT + 4 * 64:].astype(int)
    red = (moved[..., 0] - moved[..., 2]) > 80
    assert red.any()                                                        # The lump came toward the viewer...
    cols = np.nonzero(red.any(axis=0))[0]
    assert cols.min() > 32                                                  # ... at world +x, the right half of the front view.

#----------------------------------------------------------------------------
# --stop-on-hacking: a fine-tuning run of the bundled generator on a reward hacked by construction stops at the first
# tick where the alarm is significant, says why in one line, and leaves a snapshot that loads and draws.

@pytest.mark.slow
def test_stop_on_hacking_ends_a_hacked_run_with_a_snapshot(data, tmp_path):
    import csv
    import json
    import os
    import torch
    from eg3d_rlhf.rewards.checkpoint import load_reward
    from eg3d_rlhf.synthetic import demo
    from tests.helpers.collateral import one_sided_reward
    from tests.helpers.train import base_args, only_run_dir, run_train
    from training import legacy
    from training.camera_utils import orbit_camera_label
    reward = one_sided_reward(str(tmp_path / 'one-sided.pt'), load_reward(demo.reward_model('sigma')).spec.slab)
    args = base_args(data, tmp_path / 'runs', '--resume', demo.GENERATOR, '--trust-pickle', '--reward', 'sigma',
        '--reward-model', reward, '--glr', '0.002', '--kimg', '0.06', '--tick', '0.008', '--snap', '100', '--workers', '0',
        '--panel-seeds', '2000-2015', '--collateral-seeds', '16', '--collateral-res', '64', '--stop-on-hacking')
    output = run_train(args)
    stops = [line for line in output.splitlines() if line.startswith('stopping: ')]
    assert len(stops) == 1 and stops[0].startswith('stopping: reward hacking suspected: symmetric preferred in ')
    run_dir = only_run_dir(tmp_path / 'runs')
    with open(os.path.join(run_dir, 'reward_trajectories.csv')) as f:
        ticks = [float(row[0]) for row in list(csv.reader(f))[1:]]
    assert ticks[-1] < 0.06 and len(ticks) == output.count('panel of 16 seeds: ')    # Stopped before the end...
    lines = output.splitlines()
    checks = [i for i, line in enumerate(lines) if line.startswith('panel of 16 seeds: ')]
    assert lines.index(stops[0]) == checks[-1] + 1                          # ... at the tick whose check raised it.
    report = json.load(open(os.path.join(run_dir, 'reward_report.json')))
    assert report['alarm'] == report['stopped'] == stops[0][len('stopping: '):]
    assert open(os.path.join(run_dir, 'reward_report.html')).read().index(report['alarm']) < 700
    snap = legacy.load_network_pkl(os.path.join(run_dir, 'network-snapshot-000000.pkl'), trust=True)
    assert snap['progress']['kimg'] == ticks[-1] and 'resume_state' in snap
    G = snap['G_ema']
    image = G(torch.zeros([1, G.z_dim]), orbit_camera_label(G.rendering_kwargs))['image']
    assert torch.isfinite(image).all()
