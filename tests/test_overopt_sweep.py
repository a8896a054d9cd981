"""finetune/overopt_sweep.py and tools/overoptimize.py: runs described and compared, the summary written, settings kept."""

import json
import os

import numpy as np
import pytest

from eg3d_rlhf.analysis import overoptimization as oo
from eg3d_rlhf.finetune import overopt_sweep
from eg3d_rlhf.finetune.options import RunError
from tests.helpers.cli import invoke
from tools import overoptimize


def curves(alpha, beta, ticks=12):
    """A run's proxy_gold: gold on Gao's rl curve, the proxy rising ever faster, disagreement doubling half way."""
    c = oo.Curves()
    for i, d in enumerate(np.linspace(0, 3, ticks)):
        c.add(kimg=0.1 * i, proxy=float(d + d * d), aggregate=float(d), disagreement=float(0.1 * (1 + d / 1.5)),
            gold=float(oo.predict([d], alpha, beta)[0]), distance=float(d), param_distance=0.0, members=[float(d)])
    return c.summary()


def test_runs_are_described_and_a_conservative_aggregate_compared_with_the_mean_per_seed(tmp_path):
    runs = []
    for seed, (mean_beta, min_beta) in enumerate([(1.0, 0.6), (1.0, 0.7), (0.9, 1.0)]):
        for agg, beta in (('mean', mean_beta), ('min', min_beta)):
            pg = curves(1.0, beta)
            runs.append(dict(aggregate=agg, seed=seed, **overopt_sweep.describe(pg), curves=pg))
    mean0 = runs[0]
    assert mean0['peak_distance'] == pytest.approx(1.0, abs=0.15) and mean0['fitted_peak_distance'] == pytest.approx(1.0)
    assert mean0['lost_from_peak'] > 0.2 and mean0['end_proxy'] == pytest.approx(12.0)
    assert mean0['disagreement_stop_kimg'] == pytest.approx(0.6)
    assert mean0['fitted_at_stop'] == pytest.approx(1.0)                    # Exact points: the stop's fit is exact too.
    c = overopt_sweep.compare(runs)['min']
    assert c['seeds'] == [0, 1, 2] and c['higher'] == 2 and len(c['end_gold_minus_mean']) == 3
    summary = overopt_sweep.write(str(tmp_path), runs, dict(taste='nose'))
    assert summary['compare']['min']['higher'] == 2
    saved = json.loads((tmp_path / 'overoptimization.json').read_text())
    assert set(saved['curves']) == {'mean-seed0', 'min-seed0', 'mean-seed1', 'min-seed1', 'mean-seed2', 'min-seed2'}
    assert 'min ends with more gold than mean in 2 of 3 seeds' in (tmp_path / 'overoptimization.md').read_text()
    assert (tmp_path / 'overoptimization.png').read_bytes()[:4] == b'\x89PNG'


def test_the_plot_turns_logarithmic_only_where_one_run_went_far(tmp_path, monkeypatch):
    """Before: one flow run that jumped to 19.7 in distance squashed the other nine into the plot's left edge."""
    def run(end, proxy_end):
        d = np.linspace(0, end, 5)
        return dict(aggregate='mean', seed=0, curves=dict(distance=d, proxy_gain=np.linspace(0, proxy_end, 5),
            gold_gain=np.zeros(5)))
    near = [run(1.0, 3.0), run(1.2, 4.0), run(0.8, 2.0)]
    assert overopt_sweep.axis_scales(near) == dict(distance=None, proxy=None)
    assert overopt_sweep.axis_scales(near + [run(4.0, 49.0)]) == dict(distance=None, proxy=None)
    assert overopt_sweep.axis_scales(near + [run(19.7, -762.0)]) == dict(distance=pytest.approx(1.1), proxy=1.0)
    drawn = []
    monkeypatch.setattr(overopt_sweep.report_plots, '_save', lambda fig, path: drawn.append(fig))
    overopt_sweep.plot(near + [run(19.7, -762.0)], str(tmp_path / 'p.png'), 'nose', 'flow')
    top, bottom = drawn[0].axes
    assert (top.get_xscale(), bottom.get_yscale(), bottom.get_xscale()) == ('symlog', 'symlog', 'symlog')
    overopt_sweep.plot(near, str(tmp_path / 'p.png'), 'nose', 'flow')
    assert (drawn[1].axes[0].get_xscale(), drawn[1].axes[1].get_yscale()) == ('linear', 'linear')


def test_a_folder_keeps_its_settings(tmp_path):
    overopt_sweep.keep_settings(str(tmp_path), dict(kimg=2.0, train_args=('--glr=0.004',)))
    overopt_sweep.keep_settings(str(tmp_path), dict(kimg=2.0, train_args=('--glr=0.004',)))
    with pytest.raises(RunError, match=r'other settings \(kimg, train_args\); use another --outdir'):
        overopt_sweep.keep_settings(str(tmp_path), dict(kimg=4.0, train_args=()))
    with pytest.raises(RunError, match=r'other settings \(kimg\); use'):         # A free key changes; kimg may not.
        overopt_sweep.keep_settings(str(tmp_path), dict(kimg=4.0, train_args=('--glr=0.004',), seeds=[1]), free=('seeds',))
    overopt_sweep.keep_settings(str(tmp_path), dict(kimg=2.0, train_args=('--glr=0.004',), seeds=[1, 2]), free=('seeds',))
    assert json.loads((tmp_path / 'settings.json').read_text())['seeds'] == [1, 2]   # The file takes the new value.


@pytest.mark.parametrize('args, message', [(['--aggregates', 'min'], 'mean must be among them'),
    (['--aggregates', 'mean,max'], "'max' is no aggregate"), (['--train-seeds', '5-2'], '--train-seeds'),
    (['--kimg', 'nan'], "'nan' is not a finite number"), (['--generator', 'flow', '--kimg', '1'], 'is for --generator=eg3d'),
    (['--iterations', '5'], 'is for --generator=flow'), (['--aggregate-lambda', 'inf'], "'inf' is not a finite number")])
def test_the_tool_refuses_bad_flags_before_any_work(tmp_path, args, message):
    result = invoke(overoptimize.main, ['--outdir', str(tmp_path / 'o'), *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / 'o').exists()


def test_a_flow_sweep_labels_within_a_condition_and_tunes_by_grpo_with_probes(tmp_path, monkeypatch):
    """The flow's proxy pairs two samples of one condition; each run is Flow-GRPO probing the panel seeds, and its
    curves are read from report.json."""
    calls = []

    def child(args, log):
        calls.append(list(args))
        if args[0].endswith('train.py'):
            run_dir = os.path.join(next(a.split('=', 1)[1] for a in args if a.startswith('--outdir=')), '00000-grpo')
            os.makedirs(run_dir)
            with open(os.path.join(run_dir, 'report.json'), 'w', encoding='utf-8') as f:
                json.dump(dict(proxy_gold=dict(rows=oo_rows())), f)
        elif 'sample_bank' in args[0]:
            os.makedirs(args[args.index('--outdir') + 1])
            open(os.path.join(args[args.index('--outdir') + 1], 'bank.json'), 'w', encoding='utf-8').close()
        else:
            out = args[args.index('--out') + 1]
            for path in [out] + ([out.replace('.safetensors', '.report.json')] if 'train_reward' in args[0] else []):
                open(path, 'w', encoding='utf-8').close()
    monkeypatch.setattr(overopt_sweep, 'child', child)
    reward = overopt_sweep.proxy(str(tmp_path), 'flow-natural-nose', 200, '0-37', 64, 0, 'flow')
    assert calls[0][calls[0].index('--network') + 1] == 'bundled-flow' and '--same-condition' in calls[1]
    assert overopt_sweep.proxy(str(tmp_path), 'flow-natural-nose', 200, '0-37', 64, 0, 'flow') == reward
    os.remove(os.path.join(tmp_path, 'proxy.report.json'))                # A fit stopped before its report: again.
    assert overopt_sweep.proxy(str(tmp_path), 'flow-natural-nose', 200, '0-37', 64, 0, 'flow') == reward
    assert len(calls) == 4 and 'train_reward' in calls[3][0] and '--force' in calls[3]
    del calls[3]
    pg = overopt_sweep.run(str(tmp_path), reward, 'min', 3, 'flow-natural-nose', panel_seeds='3000-3003',
        extra=('--grpo-lr=0.001',), generator='flow', iterations=10, probe_every=2)
    train = calls[-1]
    for flag in ('--method=grpo', '--generator=flow', '--grpo-iterations=10', '--probe-every=2',
            '--probe-seeds=3000-3003', '--eval-seeds=none', '--reward-aggregate=min', '--gold-taste=flow-natural-nose',
            '--seed=3', '--grpo-lr=0.001'):
        assert flag in train, flag
    assert not any(a.startswith(('--kimg', '--lambda-r', '--panel-seeds')) for a in train)
    assert pg['gold_gain'] == oo.Curves(oo_rows()).summary()['gold_gain']
    overopt_sweep.run(str(tmp_path), reward, 'min', 3, generator='flow')                 # Its report is there: no run.
    assert len(calls) == 4


def oo_rows():
    c = oo.Curves()
    c.scale = dict(proxy=1.0, gold=0.5)
    for i, d in enumerate((0.0, 0.1, 0.2, 0.3)):
        c.add(kimg=0.032 * i, proxy=d * 10, aggregate=d * 10, disagreement=0.1, gold=d - 2 * d * d, distance=d,
            param_distance=None, members=[d * 10])
    return c.state()


def test_the_tool_gives_a_flow_its_own_bank_panel_and_schedule(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(overopt_sweep, 'proxy', lambda *a: seen.setdefault('proxy', a) and 'proxy.safetensors')
    monkeypatch.setattr(overopt_sweep, 'run', lambda *a: seen.setdefault('run', a) and oo.Curves(oo_rows()).summary())
    monkeypatch.setattr(overopt_sweep, 'write', lambda outdir, runs, settings: seen.setdefault('settings', settings))
    (tmp_path / 'o').mkdir()
    (tmp_path / 'o' / 'overoptimization.md').write_text('table\n')
    result = invoke(overoptimize.main, ['--outdir', str(tmp_path / 'o'), '--generator', 'flow', '--taste',
        'flow-natural-nose', '--aggregates', 'mean', '--iterations', '6', '--', '--grpo-lr=0.001'])
    assert result.exit_code == 0, result.output
    assert seen['proxy'][3] == '0-37' and seen['proxy'][-1] == 'flow'
    assert seen['run'][9] == '3000-3003' and seen['run'][-3:] == ('flow', 6, 2) and seen['run'][10] == ('--grpo-lr=0.001',)
    assert 'kimg' not in seen['settings'] and seen['settings']['iterations'] == 6
