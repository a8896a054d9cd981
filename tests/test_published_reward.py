"""The published sigma-field reward bundle: read as data (folder or zip), strictly, scoring as the paper's network does."""

import json
import os
import zipfile

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pytorch3dunet.unet3d.model import ResidualUNetSE3D

from eg3d_rlhf import cli
from eg3d_rlhf.analysis import embedding
from eg3d_rlhf.geometry.sigma import grid_from_meta, slab_description
from eg3d_rlhf.rewards import build_reward, bundle, fitting
from eg3d_rlhf.rewards.bundle import BundleError, published_spec
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, load_reward, save_reward
from tests.helpers.bundles import F_MAPS, FEATURE, MLP_OUT, YAML, paper_state_dict, write_bundle
from tools import convert_reward

pytestmark = pytest.mark.usefixtures('one_thread')

#----------------------------------------------------------------------------
# The tiny bundle is tests/helpers/bundles.py's; the paper's r of it is written out here as its oracle.

def paper_reward(sd, raw):
    """r of raw slabs [N, X, Y, Z] written out from the published description with the test's own modules."""
    x = raw.float()
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    x = ((x - lo) / (hi - lo) * 100).permute(0, 3, 2, 1)                   # Whole-slab min-max, (x, y, z) -> (z, y, x).
    unet = ResidualUNetSE3D(1, 8, f_maps=F_MAPS, layer_order='gcr', num_groups=2, is_segmentation=False).eval()
    unet.load_state_dict({k[len('Conv3DModule.'):]: v for k, v in sd.items() if k.startswith('Conv3DModule.') and
        'recon' not in k})
    volume = torch.max(unet(x[:, None])[:, -4:], 1)[0]                      # [N, D, H, W]
    f = torch.nn.AdaptiveMaxPool3d((FEATURE, 1, 1))(volume).view(-1, FEATURE)    # 4-D input: N is its channel axis.
    def mlp(prefix, v):
        lin = lambda name, t: t @ sd[f'{prefix}.{name}.weight'].T + sd[f'{prefix}.{name}.bias']
        h = lin('input_layer', v)
        return lin('output_layer', torch.nn.functional.softplus(lin('hidden_layers.0.0', h + h)))   # The residual quirk.
    return mlp('scalar_rwd_head', mlp('MLP', f))[:, 0]


class Holder(dict):
    """A state_dict inside a pickled object of a class of its own (torch.load(weights_only=True) refuses it)."""


@pytest.fixture(scope='module')
def slab():
    rng = np.random.RandomState(3)
    shape = published_spec().grid.shape
    return torch.from_numpy(rng.gamma(1.0, 10.0, size=(2, *shape)).astype(np.float32) - 5)

#----------------------------------------------------------------------------

def test_published_sizes_build_179_tensors_of_12_7_million_parameters():
    with torch.device('meta'):
        model = build_reward('sigma-unet')
    sd = model.state_dict()
    assert len(sd) == 179 and list(model.buffers()) == []
    assert round(sum(v.numel() for v in sd.values()) / 1e6, 1) == 12.7
    assert {k.split('.')[0] for k in sd} == {'Conv3DModule', 'MLP', 'scalar_rwd_head', 'scalar_rwd_head_BT',
        'scalar_rwd_head_pairs'}
    assert sd['MLP.input_layer.weight'].shape == (512, 8192) and sd['scalar_rwd_head.output_layer.weight'].shape == (1, 128)


def test_centring_shifts_the_scalar_heads_output():
    torch.manual_seed(0)
    model = build_reward('sigma-unet', f_maps=[4, 8], num_groups=2).eval()
    x = torch.rand([2, 12, 10, 9]) * 100
    with torch.no_grad():
        before = model.score(x)
        fitting.centre_scores(model, 0.75)
        assert torch.allclose(model.score(x), before - 0.75, atol=1e-5)


def test_published_input_spec_is_the_exact_eg3d_slab():
    spec = published_spec()
    grid = spec.grid
    assert grid.shape == (128, 141, 129) and grid.exact_eg3d_grid and spec.order == 'zyx' and spec.scale == 100
    n, (i, j, k) = 256, (70, 100, 200)                                    # create_samples: float32 division, no floor.
    flat = torch.tensor([(i * n + j) * n + k]).float()
    expect = torch.stack([(flat / n / n) % n, (flat / n) % n, torch.tensor([float(k)])], dim=1) * (1 / 255) - 0.5
    pos = torch.tensor([((i - 64) * 141 + (j - 64)) * 129 + (k - 102)])
    assert torch.equal(grid.points_at(pos), expect) and not torch.equal(grid.points_at(pos)[:, 1], torch.tensor([j / 255 - 0.5]))
    old = slab_description(256)                                             # Banks and checkpoints written before.
    assert 'exact_eg3d_grid' not in old and not grid_from_meta(old).exact_eg3d_grid


def test_bundle_scores_like_the_paper_folder_and_zip_alike(tmp_path, slab):
    folder, path = write_bundle(str(tmp_path))
    a, b = load_reward(folder), load_reward(path)
    assert a.kind == b.kind == 'sigma-unet' and a.spec == b.spec == published_spec()
    assert same_model(a, b)                             # So they score alike: the folder's scores are checked below.
    with torch.no_grad():
        ra = a.score(slab)
        expect = paper_reward(paper_state_dict(), slab)
        assert torch.allclose(ra, expect, rtol=1e-4, atol=1e-5)
    assert not torch.equal(ra[0], ra[1])
    # What attribution, UMAP and fine-tuning read: features with scores from them, gradients back to the raw slab.
    feats, scores = embedding.reward_features(a, slab.numpy(), batch=1)
    assert feats.shape == (2, FEATURE) and np.allclose(scores, ra.numpy(), rtol=1e-5, atol=1e-6)
    raw = slab[:1].clone().requires_grad_(True)
    a.score(raw).sum().backward()
    assert raw.grad.shape == raw.shape and bool(raw.grad.abs().sum() > 0)
    # Our checkpoint format holds it too (tools/convert_reward.py): the same network, so the same scores.
    save_reward(str(tmp_path / 'converted.pt'), a.model, a.kind, a.spec)
    converted = load_reward(str(tmp_path / 'converted.pt'))
    assert converted.kind == a.kind and converted.spec == a.spec and same_model(converted, a)


def same_model(a, b):
    """Two loaded rewards hold one network: the same class and bit-identical tensors under the same names."""
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return type(a.model) is type(b.model) and sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_convert_reward_tool(tmp_path, slab):
    _, path = write_bundle(str(tmp_path))
    out = str(tmp_path / 'reward.pt')
    run = lambda *args: CliRunner().invoke(convert_reward.main, ['--reward-model', path, '--out', out, *args])
    result = run('--dry-run')
    assert result.exit_code == 0 and f'would write {out}: sigma-unet reward, {len(paper_state_dict())} tensors' in result.output
    assert not os.path.exists(out)
    assert run().exit_code == 0 and os.path.isfile(out)
    refused = run()
    assert refused.exit_code != 0 and 'pass --force' in refused.output
    assert run('--force').exit_code == 0
    converted = load_reward(out)
    assert converted.kind == 'sigma-unet' and converted.spec == published_spec()
    assert converted.info['training']['source'] == path
    with torch.no_grad():
        assert torch.equal(converted.score(slab[:1]), load_reward(path).score(slab[:1]))


def test_run_config_name_and_interpolations(tmp_path):
    folder, _ = write_bundle(str(tmp_path), config_name='run_config.yaml')
    reward = load_reward(folder)
    assert reward.model.config['pairs_head']['input_size'] == 2 * MLP_OUT and reward.model.config['f_maps'] == F_MAPS
    assert reward.model.config['scalar_head']['input_size'] == MLP_OUT


def test_pickled_weights_refused_without_trust(tmp_path):
    folder, path = write_bundle(str(tmp_path), weights=Holder(paper_state_dict()))
    for where in (folder, path):
        with pytest.raises(RewardCheckpointError, match='--trust-pickle') as err:
            load_reward(where)
        assert '\n' not in str(err.value) and 'best_model.pt' in str(err.value)
    assert load_reward(path, trust_pickle=True).kind == 'sigma-unet'


@pytest.mark.parametrize('change, message', [
    (lambda sd: sd.pop('scalar_rwd_head.output_layer.bias'), 'missing weight scalar_rwd_head.output_layer.bias'),
    (lambda sd: sd.update({'model.extra': torch.zeros(1)}), 'unexpected weight model.extra'),
    (lambda sd: sd.update({'MLP.input_layer.bias': torch.zeros(3)}), 'weight MLP.input_layer.bias has shape [3]'),
])
def test_missing_extra_or_misshapen_weight_is_one_line(tmp_path, change, message):
    sd = paper_state_dict()
    change(sd)
    _, path = write_bundle(str(tmp_path), sd=sd)
    with pytest.raises(click.ClickException) as err:
        cli.open_reward(path, 'cpu')
    text = err.value.format_message()
    assert message in text and '\n' not in text and text.startswith(f'--reward-model: {path}:7wnzkgie/best_model.pt')


@pytest.mark.parametrize('edit, message', [
    (('num_groups: 2', 'num_groups: 2\n    wings: 3'), 'model.Conv3DModule.wings is an unknown field'),
    (('    n_channels_for_feature: 4\n', ''), 'model.Conv3DModule.n_channels_for_feature is missing'),
    (('forward_type: entire', 'forward_type: patches'), "model.Conv3DModule.forward_type is 'patches'"),
    (('input_size: ${model.mlp_global.output_size}', 'input_size: ${oc.env:SIZE}'), "model.mlp_scalar_rwd.input_size is the interpolation '${oc.env:SIZE}'"),
    (('ResidualUNetSE3D', 'os.system'), "model.Conv3DModule._target_ is 'core_modules.models.unet3d.model.os.system'"),
    (('normalisation_type: none\n    activation_type: softplus\n    use', 'normalisation_type: batch_norm\n    activation_type: softplus\n    use'), "model.mlp_global.normalisation_type is 'batch_norm'"),
    (('model:', 'models:'), 'no "model" section'),
])
def test_bad_run_config_is_one_line_naming_file_and_key(tmp_path, edit, message):
    text = YAML.replace(*edit, 1)
    assert text != YAML
    folder, _ = write_bundle(str(tmp_path), yaml_text=text)
    with pytest.raises(RewardCheckpointError) as err:
        load_reward(folder)
    assert message in str(err.value) and '\n' not in str(err.value)
    assert str(err.value).startswith(os.path.join(folder, 'release_config.yaml'))


def test_a_folder_or_zip_without_a_bundle(tmp_path):
    with pytest.raises(RewardCheckpointError, match='no best_model.pt in this folder'):
        load_reward(str(tmp_path))
    with zipfile.ZipFile(tmp_path / 'other.zip', 'w') as z:
        z.writestr('7wnzkgie/notes.txt', 'no weights')
    with pytest.raises(RewardCheckpointError, match='other.zip: no such reward checkpoint|other.zip: not a reward checkpoint'):
        load_reward(str(tmp_path / 'other.zip'))
    folder, _ = write_bundle(str(tmp_path / 'b'))
    os.remove(os.path.join(folder, 'release_config.yaml'))
    with pytest.raises(RewardCheckpointError, match='no release_config.yaml or run_config.yaml'):
        load_reward(folder)

#----------------------------------------------------------------------------


def test_train_reward_trains_the_published_architecture_on_its_contract(tmp_path):
    from eg3d_rlhf.data import annotators, preferences
    from tests.helpers.banks import ball_bank
    from tools import train_reward
    root, radii = ball_bank(tmp_path / 'bank', 24, seed=4)
    oracle = annotators.OracleAnnotator('nose', radii, temperature=0, seed=0)
    preferences.write_judgements(str(tmp_path / 'labels.jsonl'), oracle.judgements(oracle.draw_pairs(radii, 120)))
    out = tmp_path / 'unet.pt'
    result = CliRunner().invoke(train_reward.main, ['--bank', str(root), '--labels', str(tmp_path / 'labels.jsonl'),
        '--reward', 'sigma-unet', '--epochs', '1', '--model-config', json.dumps(dict(f_maps=[4, 8], num_groups=2)),
        '--device', 'cpu', '--out', str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    reward = load_reward(str(out))
    assert reward.kind == 'sigma-unet' and (reward.spec.order, reward.spec.normalisation) == ('zyx', 'self_minmax')
    assert reward.info['training']['epochs_run'] == 1 and reward.model.config['f_maps'] == [4, 8]

#----------------------------------------------------------------------------
# A bundle's run config: a key given twice, fields of the wrong kind.

def test_a_bundle_run_config_naming_a_key_twice_is_refused(tmp_path):
    folder, _ = write_bundle(str(tmp_path), yaml_text=YAML.replace('    num_groups: 2\n', '    num_groups: 2\n' * 2, 1))
    with pytest.raises(BundleError, match="release_config.yaml: key 'num_groups' is given twice"):
        bundle.load_bundle(folder)                      # Before: the last one, silently.


@pytest.mark.parametrize('edit, message', [
    (('f_maps: [4, 8]', 'f_maps: [1000000000000, 8]'), 'its model cannot be built'),         # Before: 4 TB asked for.
    (('num_groups: 2', 'num_groups: 2\n    1: x\n    wings: 3'), 'model.Conv3DModule has a key that is not text (1)'),
])
def test_reward_config_fields_of_the_wrong_kind_are_refused(tmp_path, edit, message):
    folder, _ = write_bundle(str(tmp_path), yaml_text=YAML.replace(*edit, 1))
    with pytest.raises(BundleError, match=message.replace('(', '\\(').replace(')', '\\)')):
        bundle.load_bundle(folder)                      # Before: RuntimeError, TypeError of sorted().

#----------------------------------------------------------------------------
# A bundle folder's weights are sized before they are read.

def test_a_bundle_folders_weights_are_sized_before_they_are_read(tmp_path, monkeypatch):
    folder, _ = write_bundle(str(tmp_path))
    monkeypatch.setattr(bundle, 'MAX_WEIGHTS_BYTES', 1 << 20)
    weights = os.path.join(folder, 'best_model.pt')
    os.truncate(weights, 3 << 20)                       # Sparse: as a 40 GiB one would be, at test size.
    with pytest.raises(BundleError, match='best_model.pt: 3 MiB, larger than 1 MiB; not a released reward'):
        bundle.load_bundle(folder)                      # Before: read whole, then "not a readable torch file".
