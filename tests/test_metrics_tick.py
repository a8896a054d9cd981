"""Training-time metrics: EG3D's names, fid1k_partial's images, metric-<name>.jsonl and stats.jsonl every tick, refusals."""

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import train
from eg3d_rlhf.analysis import image_metrics
from eg3d_rlhf.analysis import training_metrics
from tests.conftest import REPO
from tests.helpers.evaluate import save_feature_network
from tests.helpers.train import TINY_NETS, TRAIN_ARGS, base_args, only_run_dir, run_train

pytestmark = pytest.mark.usefixtures('one_thread')

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def features_file(tmp_path_factory):
    """A stand-in feature network (2x2 average-pooled colours, 12 features) saved as a TorchScript archive."""
    return save_feature_network(str(tmp_path_factory.mktemp('net') / 'features.pt'), 'torchscript')


def pooled(images):
    """The stand-in network's features of uint8 images [N, 3, H, W]."""
    return torch.nn.functional.adaptive_avg_pool2d(images.float(), 2).flatten(1).double().numpy()


class StubG(torch.nn.Module):
    """A generator that draws 64x64 images from z in no time and keeps every image it drew."""
    z_dim = 512

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))
        self.drawn, self.labels = [], []

    def forward(self, z, c):
        self.labels.append(c.clone())
        images = torch.tanh(self.scale * z[:, :48].reshape(-1, 3, 4, 4)).repeat_interleave(16, 2).repeat_interleave(16, 3)
        self.drawn.append(images)
        return dict(image=images)

#----------------------------------------------------------------------------

def test_metric_names_follow_eg3d_and_the_paper():
    spec = training_metrics.metric_spec
    assert spec('fid1k_partial') == training_metrics.MetricSpec('fid1k_partial', 'fid', 1000, None, True)
    assert spec('fid50k_full') == training_metrics.MetricSpec('fid50k_full', 'fid', 50000, None, True)
    assert spec('kid50k_full') == training_metrics.MetricSpec('kid50k_full', 'kid', 50000, 1000000, True)
    assert spec('fid50k').max_real == 50000 and not spec('fid50k').no_xflip
    assert (spec('kid12_partial').kind, spec('kid12_partial').num_gen) == ('kid', 12)
    for bad in ('fid1k', 'pr50k3_full', 'fid0_partial', 'fid1_partial', 'FID1k_partial'):
        with pytest.raises(training_metrics.MetricError):
            spec(bad)
    with pytest.raises(training_metrics.MetricError, match='twice'):
        training_metrics.parse_metrics(['fid4_partial', 'fid4_partial'])


def test_fid1k_partial_is_1000_generated_images_against_every_real_one(data, features_file, tmp_path):
    G = StubG()
    metrics = training_metrics.TrainingMetrics(['fid1k_partial', 'kid8_partial'], features_file, trust_pickle=True,
        dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True, xflip=True),
        run_dir=str(tmp_path), batch=64)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    results = metrics.evaluate(G, snapshot_pkl=str(tmp_path / 'network-snapshot-000004.pkl'))
    assert torch.equal(torch.rand(3), before)                   # The training's random stream is left alone.

    drawn = torch.cat(G.drawn)
    assert drawn.shape == (1000, 3, 64, 64)
    fake = pooled((drawn * 127.5 + 128).clamp(0, 255).to(torch.uint8))
    from training.dataset import ImageFolderDataset
    reals = ImageFolderDataset(data, use_labels=True)           # All 8, without the training set's x-flips.
    real = pooled(torch.from_numpy(np.stack([reals[i][0] for i in range(len(reals))])))
    assert len(real) == 8
    labels = torch.cat(G.labels)                                # Cameras drawn from the dataset's labels.
    known = torch.from_numpy(np.stack([reals.get_label(i) for i in range(len(reals))]))
    assert all((known == row).all(dim=1).any() for row in labels)

    fid, kid = results
    assert fid.metric == 'fid1k_partial' and fid.num_gpus == 1
    assert fid.results.fid1k_partial == pytest.approx(image_metrics.fid_from_features(fake, real, ddof=0), rel=1e-6)
    assert kid.results.kid8_partial == pytest.approx(image_metrics.kid_from_features(fake[:8], real), rel=1e-6)

    again = metrics.evaluate(G)                                 # The same latents every evaluation.
    assert again[0].results.fid1k_partial == pytest.approx(fid.results.fid1k_partial, rel=1e-9)
    lines = [json.loads(line) for line in open(tmp_path / 'metric-fid1k_partial.jsonl')]
    assert len(lines) == 2
    assert set(lines[0]) == {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'snapshot_pkl', 'timestamp'}
    assert lines[0]['snapshot_pkl'] == 'network-snapshot-000004.pkl' and lines[1]['snapshot_pkl'] is None
    assert lines[0]['results'] == {'fid1k_partial': fid.results.fid1k_partial}

#----------------------------------------------------------------------------
# Through train.py: a synthetic run of two ticks.

def test_metrics_run_every_tick_into_metric_files_and_stats(data, features_file, tmp_path):
    output = run_train(base_args(data, tmp_path, *TRAIN_ARGS, '--kimg', '0.004', '--tick', '0.002',
        '--metrics', 'fid4_partial,kid4_partial', '--inception', features_file, '--trust-pickle'))
    run_dir = only_run_dir(tmp_path)
    stats = [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert len(stats) == 2                                      # Ticks 0 and 1.
    for name in ('fid4_partial', 'kid4_partial'):
        lines = [json.loads(line) for line in open(os.path.join(run_dir, f'metric-{name}.jsonl'))]
        assert [line['metric'] for line in lines] == [name, name]
        assert [line['snapshot_pkl'] for line in lines] == ['network-snapshot-000000.pkl'] * 2        # --snap 1.
        values = [line['results'][name] for line in lines]
        assert all(np.isfinite(values)) and values[0] != values[1]                  # G_ema moved between ticks.
        assert [s[f'Metrics/{name}']['mean'] for s in stats] == pytest.approx(values, rel=1e-6)
        assert f'{name} ' in output
    options = json.load(open(os.path.join(run_dir, 'training_options.json')))
    assert options['metrics_kwargs']['metrics'] == ['fid4_partial', 'kid4_partial'] and options['metrics_ticks'] == 1


def test_metrics_ticks_skips_ticks_but_keeps_the_first_and_last(data, features_file, tmp_path):
    run_train(base_args(data, tmp_path, *TRAIN_ARGS, '--kimg', '0.008', '--tick', '0.002', '--snap', '100',
        '--metrics', 'fid2_partial', '--metrics-ticks', '2', '--inception', features_file, '--trust-pickle'))
    run_dir = only_run_dir(tmp_path)
    lines = [json.loads(line) for line in open(os.path.join(run_dir, 'metric-fid2_partial.jsonl'))]
    assert len(lines) == 3 and lines[1]['snapshot_pkl'] is None                  # Ticks 0, 2 and the last (3).
    assert lines[0]['snapshot_pkl'] == lines[2]['snapshot_pkl'] == 'network-snapshot-000000.pkl'   # --snap 100.
    v0, v2, v3 = (line['results']['fid2_partial'] for line in lines)
    stats = [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))]
    # As every statistic in stats.jsonl, a tick that measured nothing repeats the last value (EG3D's collector).
    assert [s['Metrics/fid2_partial']['mean'] for s in stats] == pytest.approx([v0, v0, v2, v3], rel=1e-6)

#----------------------------------------------------------------------------

@pytest.mark.parametrize('extra, message', [
    (['--metrics', 'fid1k_partial'], '--metrics=fid1k_partial needs --inception PATH'),
    (['--metrics', 'fid1k_partial,fid50k_ful', '--inception', 'FEATURES', '--trust-pickle'], "unknown metric 'fid50k_ful'"),
    (['--metrics', 'fid1k_partial', '--inception', 'FEATURES'], 'pass --trust-pickle if you trust it'),
    (['--metrics', 'fid1k_partial', '--inception', 'missing.pt', '--trust-pickle'], 'missing.pt does not exist'),
    (['--metrics', 'fid1k_partial', '--inception', 'DATA', '--trust-pickle'], 'nor a TorchScript archive'),
    (['--metrics', 'fid1k_partial', '--inception', 'README', '--trust-pickle'], 'README.md cannot be loaded'),
    (['--metrics-ticks', '2'], '--metrics-ticks is for --metrics'),
    (['--inception', 'FEATURES'], '--inception is for --metrics'),
])
def test_bad_metric_arguments_are_refused_in_one_line(data, features_file, tmp_path, extra, message):
    extra = [{'FEATURES': features_file, 'DATA': data, 'README': os.path.join(REPO, 'README.md')}.get(a, a) for a in extra]
    result = CliRunner().invoke(train.main, base_args(data, tmp_path, *extra, '--dry-run'))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()[-1]) > 0 and 'Traceback' not in result.output
    assert not os.listdir(tmp_path)

#----------------------------------------------------------------------------

@pytest.mark.slow
def test_two_gloo_processes_share_the_images(data, features_file, tmp_path):
    run_train(base_args(data, tmp_path, *TINY_NETS, '--gpus', '2', '--mbstd-group', '2', '--workers', '0', '--kimg', '0.004',
        '--metrics', 'fid6_partial,kid6_partial', '--inception', features_file, '--trust-pickle'))
    run_dir = only_run_dir(tmp_path)
    for name in ('fid6_partial', 'kid6_partial'):
        lines = [json.loads(line) for line in open(os.path.join(run_dir, f'metric-{name}.jsonl'))]
        assert len(lines) == 1 and lines[0]['num_gpus'] == 2                   # One tick (one step); rank 0 writes.
        assert np.isfinite(lines[0]['results'][name])
    stats = [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert np.isfinite(stats[-1]['Metrics/fid6_partial']['mean'])

#----------------------------------------------------------------------------
