"""analysis/overoptimization.py: Gao's curves fitted to gold against distance recover their coefficients and peak;
the stop rules and the distances."""

import json
import math

import numpy as np
import pytest

from eg3d_rlhf.analysis import overoptimization as oo


@pytest.mark.parametrize('form, alpha, beta', [('rl', 1.5, 0.8), ('bon', 2.0, 0.5)])
def test_the_fit_recovers_alpha_beta_and_the_peak_of_a_known_curve(form, alpha, beta):
    d = np.linspace(0, 6, 25)
    noise = np.random.default_rng(0).normal(0, 0.01, len(d))
    fit = oo.fit_gold(d, oo.predict(d, alpha, beta, form) + noise, form)
    assert fit['alpha'] == pytest.approx(alpha, rel=0.02) and fit['beta'] == pytest.approx(beta, rel=0.02)
    peak = math.exp(alpha / beta - 1) if form == 'rl' else alpha / (2 * beta)
    assert fit['peak_distance'] == pytest.approx(peak, rel=0.05) and fit['r2'] > 0.99
    assert fit['peak_gain'] == pytest.approx(oo.predict([peak], alpha, beta, form)[0], rel=0.02)


def test_a_curve_that_keeps_rising_has_no_peak_and_few_points_no_fit():
    d = np.linspace(0, 3, 10)
    assert oo.fit_gold(d, 2 * d, 'bon')['peak_distance'] is None
    few = oo.fit_gold([0, 1, 2], [0, 1, 1.5])
    assert few['alpha'] is None and few['points'] == 2


@pytest.mark.parametrize('distance, gain', [([0, 1, -1], [0, 1, 2]), ([0, 1, 2], [0, float('nan'), 1]), ([0, 1], [0])])
def test_bad_curves_are_refused(distance, gain):
    with pytest.raises(ValueError):
        oo.fit_gold(distance, gain)


def test_the_gold_rule_stops_once_gold_lost_its_margin_of_the_peak_gain():
    assert oo.gold_passed_peak([0, 1, 2, 1.7], 0.2) is None                  # Lost 15% of the gain: not yet.
    assert oo.gold_passed_peak([0, 1, 2, 1.6], 0.2) == 2
    assert oo.gold_passed_peak([0, -1, -2], 0.2) is None                     # No gain, no peak to pass.
    assert oo.gold_passed_peak([0, 1, 2, 3], 0.2) is None


def test_the_gold_rule_also_stops_at_the_first_fall_once_the_fit_peaks_behind():
    d = np.linspace(0, 0.6, 7)
    gold = oo.predict(d, 2.0, 4.0, 'bon')                                    # Peak at d 0.25; 0.2 and 0.3 are near it.
    assert oo.gold_passed_peak(gold[:4], 0.2) is None                        # Lost 4% of the gain: the margin waits...
    assert oo.gold_passed_peak(gold[:4], 0.2, d[:4]) == 2                    # ...the fit already peaks at 0.25 < 0.3.
    assert oo.gold_passed_peak(gold[:3], 0.2, d[:3]) is None                 # Still rising: no stop.
    rising = 1 - np.exp(-3 * d)                                              # Concave but never falls: no stop.
    assert all(oo.gold_passed_peak(rising[:i], 0.2, d[:i]) is None for i in range(3, 8))


def test_the_best_form_is_the_one_with_the_larger_r2():
    d = np.linspace(0.05, 1.0, 12)
    for form in oo.FORMS:
        gold = oo.predict(d, 1.0, 0.8, form)
        best = oo.fit_gold(d, gold)
        assert best['form'] == form and best['r2'] == pytest.approx(1.0)
        assert best['r2'] > oo.fit_gold(d, gold, [f for f in oo.FORMS if f != form][0])['r2']


def test_the_disagreement_rule_stops_at_the_first_tick_at_its_factor():
    assert oo.disagreement_grew([0.1, 0.15, 0.21, 0.3], 2.0) == 2
    assert oo.disagreement_grew([0.1, 0.15, 0.19], 2.0) is None and oo.disagreement_grew([0.0, 1.0], 2.0) is None


def test_distances_are_rms_changes():
    a = np.zeros([2, 3, 3, 3])
    b = a.copy()
    b[0] += 2.0
    assert oo.slab_rms(b, a) == pytest.approx(1.0) and oo.parameter_rms([3.0, 4.0], [0.0, 0.0]) == pytest.approx(12.5 ** 0.5)
    with pytest.raises(ValueError, match='differ'):
        oo.slab_rms(a[:1], a)


def test_the_gold_rule_waits_for_a_fall_beyond_the_noise_and_for_its_patience():
    gold = [0, 1, 2, 1.5, 1.4]
    assert oo.gold_passed_peak(gold[:4], 0.2) == 2
    assert oo.gold_passed_peak(gold[:4], 0.2, noise=0.55) is None            # Fell 0.5: within the noise...
    assert oo.gold_passed_peak(gold, 0.2, noise=0.55) == 2                   # ...0.6: beyond it.
    assert oo.gold_passed_peak(gold[:4], 0.2, patience=2) is None            # Once is not twice in a row...
    assert oo.gold_passed_peak(gold, 0.2, patience=2) == 2                   # ...the next tick holds it too.
    assert oo.gold_passed_peak([0, 1, 2, 1.5, 1.9, 1.5], 0.2, patience=2) is None   # 1.9 lost only 5%: a break.
    assert oo.fall_noise(2, 0.5, 8) == pytest.approx(2 * 0.5 * math.sqrt(2 / 8))
    assert oo.fall_noise(2, 0.5, None) == 0 and oo.fall_noise(0, 0.5, 8) == 0
    curves = oo.Curves(dict(kimg=[0, 1, 2, 3], proxy=[0] * 4, aggregate=[0] * 4, disagreement=[1] * 4,
        gold=[0, 1, 2, 1.5], distance=[0, 1, 2, 3], param_distance=[0] * 4, members=[[0]] * 4,
        scale=dict(proxy=1.0, gold=0.5, samples=8)))
    assert curves.fall_noise(2) == pytest.approx(1.0)                        # In sd of the start: 2 sqrt(2/8).
    assert curves.stop(noise=0) == ('gold', 2) and curves.stop(noise=2.1) is None   # Raw: 0.525 > a fall of 0.5...
    assert curves.stop(noise=2) == ('gold', 2)                               # ... 0.5 reaches it.
    assert curves.summary(noise=2.1)['gold_stop_kimg'] is None and curves.summary(noise=2)['gold_stop_kimg'] == 3


def test_the_paired_noise_is_the_standard_error_of_the_samples_changes_from_the_peak():
    # Four samples of the same seeds at five ticks: at tick 2 (the peak) each sample rose by 2 from the start, and at
    # tick 4 each fell by about 0.6 from there (-0.5, -0.7, -0.6, -0.6: sd 0.0816 over the samples).
    samples = [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [1.5, 1.5, 1.5, 1.5], [1.5, 1.3, 1.4, 1.4]]
    noise = oo.paired_noise(2, samples)
    assert noise(2, 4) == pytest.approx(2 * np.std([-0.5, -0.7, -0.6, -0.6], ddof=1) / 2)     # k sd / sqrt(4).
    assert noise(2, 3) == 0 and oo.paired_noise(2, samples, unit=0.5)(2, 4) == pytest.approx(2 * noise(2, 4))
    for missing in ([None] + samples[1:], [[0, 0, 0]] + samples[1:], [[0]] * 5, None):
        assert oo.paired_noise(2, missing) is None                          # Unrecorded, uneven, one sample.
    assert oo.paired_noise(0, samples) is None
    gold = [float(np.mean(x)) for x in samples]                              # 0, 1, 2, 1.5, 1.4
    # Independent means of 4 samples of sd 1: 2 sqrt(2/4) = 1.41 hides the fall of 0.6; the paired error does not.
    assert oo.gold_passed_peak(gold, 0.2, noise=oo.fall_noise(2, 1.0, 4)) is None
    assert oo.gold_passed_peak(gold, 0.2, noise=noise) == 2
    scattered = [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [1.5] * 4, [3.4, -0.6, 2.4, 0.4]]   # Mean 1.4, scattered.
    assert oo.gold_passed_peak(gold, 0.2, noise=oo.paired_noise(2, scattered)) is None
    rows = dict(kimg=[0, 1, 2, 3, 4], proxy=[0] * 5, aggregate=[0] * 5, disagreement=[1] * 5, gold=gold,
        distance=[0, 1, 2, 3, 4], param_distance=[0] * 5, members=[[0]] * 5, scale=dict(proxy=1.0, gold=0.5, samples=4))
    curves = oo.Curves(dict(rows, gold_samples=samples))
    assert curves.stop(noise=2) == ('gold', 2) and curves.summary(noise=2)['gold_stop_kimg'] == 3   # No spread at 3.
    assert curves.fall_noise(2)(2, 4) == pytest.approx(noise(2, 4) / 0.5)    # In sd of the start, as the gains.
    old = oo.Curves(rows)                                                    # A state from before the field.
    assert old.rows['gold_samples'] == [None] * 5 and old.stop(noise=2) is None    # 2 x 0.5 x sqrt(2/4) = 0.71.
    assert oo.Curves(curves.state()).rows == curves.rows
    from eg3d_rlhf.finetune.grpo_config import GRPOConfig                   # The flow methods' rule reads them too.
    probes = [dict(gold=g, disagreement=1.0, distance=float(i), gold_sd=0.5, samples=4, gold_samples=x)
        for i, (g, x) in enumerate(zip(gold, samples))]
    cfg = GRPOConfig(probe_every=1, stop_at_peak=True, gold_taste='nose', peak_patience=1)
    assert 'passed its peak at probe 2' in cfg.peak_reason(probes)
    assert cfg.peak_reason([dict(r, gold_samples=None) for r in probes]) is None


def test_curves_summarise_peak_fit_and_stops_and_survive_their_state():
    curves = oo.Curves()
    d = np.linspace(0, 5, 11)
    gold = oo.predict(d, 1.0, 0.6, 'rl')
    for i, (di, g) in enumerate(zip(d, gold)):
        curves.add(kimg=0.1 * i, proxy=0.5 * di, aggregate=0.4 * di, disagreement=0.1 + 0.05 * di, gold=float(g),
            distance=float(di), param_distance=0.01 * di, members=[0.5 * di, 0.5 * di])
    curves.scale = dict(proxy=0.5, gold=1.0)
    again = oo.Curves(curves.state())
    s = again.summary(margin=0.2, factor=2.0)
    assert again.rows == curves.rows and s['proxy_gain'][-1] == pytest.approx(5.0)
    assert s['fit']['peak_distance'] == pytest.approx(math.exp(1 / 0.6 - 1), rel=1e-6) and not s['fit']['beyond_run']
    far = oo.Curves(dict(curves.state(), gold=[float(g) for g in oo.predict(d, 5.0, 0.5, 'rl')]))
    assert far.summary()['fit']['beyond_run'] and far.summary()['fit']['peak_kimg'] is None   # exp(9): extrapolated.
    assert s['observed_peak']['distance'] == pytest.approx(2.0)              # The grid point nearest exp(2/3) = 1.95.
    assert s['gold_stop_kimg'] is not None and s['gold_stop_kimg'] > s['observed_peak']['kimg']
    stop = round(s['gold_stop_kimg'] / 0.1)                                  # The fit a run stopped there makes.
    assert s['fit_at_stop'] == oo.fit_gold(d[:stop + 1], gold[:stop + 1]) and s['fit_at_stop']['points'] == stop
    assert s['fit_at_stop']['peak_distance'] == pytest.approx(math.exp(1 / 0.6 - 1), rel=1e-6)
    assert s['disagreement_stop_kimg'] == pytest.approx(0.4)                 # 0.1 + 0.05 d reaches 0.2 at d = 2.
    with pytest.raises(ValueError, match='unknown proxy-gold field'):
        oo.Curves(dict(curves.state(), extra=[1]))


def test_the_plot_draws_proxy_gold_and_the_fit(tmp_path):
    curves = oo.Curves()
    for i, d in enumerate(np.linspace(0, 4, 9)):
        curves.add(kimg=float(i), proxy=float(d), aggregate=float(d), disagreement=0.1, gold=float(oo.predict([d], 1, 0.5)[0]),
            distance=float(d), param_distance=0.0, members=[float(d)])
    oo.plot_curves(curves.summary(), str(tmp_path / 'pg.png'), gold_name='nose')
    assert (tmp_path / 'pg.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_the_stop_rule_reads_gold_when_there_is_gold_and_disagreement_only_without():
    grown = [0.1, 0.3, 0.3, 0.3]                                              # 3x the start from the second record.
    assert oo.stop_rule([0, 1, 2, 3], grown, [0, 1, 2, 3]) is None            # Gold still rising: no stop.
    assert oo.stop_rule([0, 2, 1.5, 1.0], grown, [0, 1, 2, 3]) == ('gold', 1)
    assert oo.stop_rule(None, grown, [0, 1, 2, 3]) == ('disagreement', 1)
    assert oo.stop_rule(None, [0.1, 0.15], [0, 1]) is None


def test_replay_stop_prints_where_the_rule_fires_and_refuses_bad_files(tmp_path):
    from click.testing import CliRunner
    from tools import replay_stop
    rows = dict(kimg=[0, 1, 2, 3, 4], proxy=[0] * 5, aggregate=[0] * 5, disagreement=[1] * 5, gold=[0, 1, 2, 1.5, 1.4],
        distance=[0, 1, 2, 3, 4], param_distance=[0] * 5, members=[[0]] * 5, scale=dict(proxy=1.0, gold=1.0))
    good = tmp_path / 'overoptimization.json'
    good.write_text(json.dumps(dict(curves={'mean-seed1': dict(rows=rows)})))
    run = lambda *args: CliRunner().invoke(replay_stop.main, [str(good), *args])
    assert '| curves/mean-seed1 | 2 (+2.00) | +1.40 | 0 | 3 | 2 (+2.00) |' in run('--peak-patience', '1').output
    assert '| 0 | 4 | 2 (+2.00) |' in run('--peak-patience', '2').output          # Twice in a row: one tick later.
    # With 8 samples the noise is 2 sqrt(2/8) = 1 sd: neither fall (0.5, 0.6) reaches it.
    assert '| curves/mean-seed1 | 2 (+2.00) | +1.40 | 1 | - | - | 0.5 (0.5) |' in run('--samples', '8').output
    paired = dict(rows, gold_samples=[[g - 0.1, g + 0.1] for g in rows['gold']])     # Every sample moves alike.
    good.write_text(json.dumps(dict(curves={'mean-seed1': dict(rows=paired)})))
    assert '| +1.40 | 0 paired | 3 | 2 (+2.00) | 0.5 (0 paired) |' in run('--samples', '8').output
    paired['gold_samples'][3] = [1.2, 1.8]                  # Changes -0.7 and -0.3: sd 0.283 / sqrt(2) = 0.2 a sample.
    good.write_text(json.dumps(dict(curves={'mean-seed1': dict(rows=paired)})))
    assert '| 2 (+2.00) | 0.5 (0.2 paired) |' in run('--samples', '8').output
    for text, why in [('{"curves": {"a": {"rows": 3}}}', 'holds no proxy-gold curves'),
            (json.dumps(dict(proxy_gold=dict(rows=dict(rows, gold=[0, 1, None, 2, 3])))), 'not usable'),
            (json.dumps(dict(proxy_gold=dict(rows=dict(rows, gold_samples=[[0, 1]] * 4 + [[0, 'x']])))), 'gold_samples'),
            ('{"x": NaN}', 'not a readable JSON file'), ('{', 'not a readable JSON file')]:
        bad = tmp_path / 'bad.json'
        bad.write_text(text)
        result = CliRunner().invoke(replay_stop.main, [str(bad)])
        assert result.exit_code == 1 and why in result.output and str(bad) in result.output
