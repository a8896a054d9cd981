"""The published reward bundle (a zip or folder: best_model.pt and its run config) read as data, as a contract.Reward."""

import io
import os
import re
import zipfile

import torch

import dnnlib
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_description
from eg3d_rlhf.rewards.contract import InputSpec, Reward

#----------------------------------------------------------------------------
# "Sculpting NeRF Geometry" released its sigma-field reward as reward-model-7wnzkgie-sfield256.zip: one folder
# (7wnzkgie/) holding best_model.pt, a plain state_dict, and the Hydra/OmegaConf run config its loader instantiates
# the model from (the docs say release_config.yaml, the loader reads run_config.yaml: either is accepted). Nothing
# here runs code from the bundle: the weights are read with torch.load(weights_only=True) unless trust_pickle, the
# YAML with yaml.safe_load, whose "_target_" names are checked as text and never imported. Interpolations such as
# ${model.mlp_global.output_size} and ${multiply:a,b} are resolved when a field the model needs uses one; others
# stay strings.

WEIGHTS = 'best_model.pt'
CONFIGS = ('release_config.yaml', 'run_config.yaml')
KIND = 'sigma-unet'
MAX_WEIGHTS_BYTES = 2 << 30                 # A zip member larger than this is refused before it is read.
MAX_CONFIG_BYTES = 16 << 20

# The tune-time input the released model was trained and used on: the raw 128x141x129 slab of gen_samples' 256^3
# grid (create_samples' off-grid float division), min-max scaled over the whole slab to [0, 100], axes (z, y, x)
# (sigma_unet.PUBLISHED_INPUT).

def published_spec(resolution=256, cube_length=1.0):
    """The InputSpec of the released sigma-field reward."""
    from eg3d_rlhf.rewards.sigma_unet import PUBLISHED_INPUT # pylint: disable=import-outside-toplevel  # pytorch3dunet: 0.25 s.
    return InputSpec(slab=slab_description(resolution, cube_length, SlabCrop(), exact_eg3d_grid=True), **PUBLISHED_INPUT)


class BundleError(ValueError):
    """A reward bundle that cannot be read; the message is one line naming the file and what to fix."""

#----------------------------------------------------------------------------
# Where the files are.

def _zip_members(path):
    """(weights member, config member or None) of a zip holding one bundle folder, or None when it holds no bundle."""
    names = [n for n in zipfile.ZipFile(path).namelist() if not n.startswith('__MACOSX/') and not n.endswith('/')]
    weights = [n for n in names if n.rsplit('/', 1)[-1] == WEIGHTS]
    if not weights:
        return None
    if len(weights) > 1:
        raise BundleError(f'{path}: holds {len(weights)} {WEIGHTS} files ({", ".join(weights[:3])}); keep one bundle per zip')
    folder = weights[0][:-len(WEIGHTS)]
    configs = [folder + c for c in CONFIGS if folder + c in names]
    return weights[0], (configs[0] if configs else None)


def is_bundle(path):
    """Is `path` a bundle folder (holding best_model.pt) or a zip with one inside? (Our own .pt checkpoints are zips
    too, of torch's layout, and are not bundles.)"""
    if os.path.isdir(path):
        return True
    try:
        return zipfile.is_zipfile(path) and _zip_members(path) is not None
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):     # A damaged zip (a member name not UTF-8, say) is
        return False                                                # no bundle: its reader names the damage.


def read_bundle_files(path):
    """(weights bytes, weights name, config bytes, config name) of a bundle folder or zip; names are for messages."""
    if os.path.isdir(path):
        inner = [d for d in sorted(os.listdir(path)) if os.path.isfile(os.path.join(path, d, WEIGHTS))]
        if not os.path.isfile(os.path.join(path, WEIGHTS)) and len(inner) == 1:
            path = os.path.join(path, inner[0])                 # The folder the zip was unpacked into.
        weights = os.path.join(path, WEIGHTS)
        configs = [os.path.join(path, c) for c in CONFIGS if os.path.isfile(os.path.join(path, c))]
        if not os.path.isfile(weights):
            raise BundleError(f'{path}: no {WEIGHTS} in this folder; point --reward-model at the bundle folder or its zip')
        if not configs:
            raise BundleError(f'{path}: no {" or ".join(CONFIGS)} beside {WEIGHTS}; restore the bundle\'s run config')
        return _read_file(weights, MAX_WEIGHTS_BYTES), weights, _read_file(configs[0], MAX_CONFIG_BYTES), configs[0]
    try:
        members = _zip_members(path)
        if members is None:
            raise BundleError(f'{path}: a zip without {WEIGHTS}; not a reward bundle')
        wname, cname = members
        if cname is None:
            raise BundleError(f'{path}: no {" or ".join(CONFIGS)} beside {wname}; restore the bundle\'s run config')
        with zipfile.ZipFile(path) as z:
            if z.getinfo(wname).file_size > MAX_WEIGHTS_BYTES:
                raise BundleError(f'{path}:{wname}: larger than {MAX_WEIGHTS_BYTES >> 30} GiB; not a released reward')
            if z.getinfo(cname).file_size > MAX_CONFIG_BYTES:
                raise BundleError(f'{path}:{cname}: larger than {MAX_CONFIG_BYTES >> 20} MiB; not a run config')
            return z.read(wname), f'{path}:{wname}', z.read(cname), f'{path}:{cname}'
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, EOFError) as err:
        raise BundleError(f'{path}: cannot read the zip ({type(err).__name__}: {_first_line(err)})') from None


def _read_file(path, limit):
    """The bytes of a bundle folder's file, its size checked before anything is read (a sparse 40 GiB best_model.pt
    is refused, not read into memory; a FIFO is refused, never waited on)."""
    try:
        with dnnlib.util.open_regular(path, 'rb', error=BundleError) as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise BundleError(f'{path}: {dnnlib.util.size_text(size)}, larger than {dnnlib.util.size_text(limit)}; '
                    f'not {"a released reward" if limit == MAX_WEIGHTS_BYTES else "a run config"}')
            data = f.read(limit + 1)
    except OSError as err:
        raise BundleError(f'{path}: cannot read it ({err.strerror or err})') from None
    if len(data) > limit:                                       # Grown since its size was read.
        raise BundleError(f'{path}: larger than {dnnlib.util.size_text(limit)}; not a bundle\'s file')
    return data


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else ''

#----------------------------------------------------------------------------
# The run config, as data.

_REFERENCE = re.compile(r'\$\{([A-Za-z_][\w.]*)\}')
_MULTIPLY = re.compile(r'\$\{multiply:([^${}]+),([^${}]+)\}')


def _lookup(root, dotted):
    node = root
    for part in dotted.split('.'):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def resolve(value, root, depth=0):
    """A YAML value with whole-value interpolations ${a.b.c} (absolute) and ${multiply:x,y} resolved where they can
    be (innermost first); anything else is returned as it is."""
    if not isinstance(value, str) or '${' not in value or depth > 20:
        return value
    whole = _REFERENCE.fullmatch(value)
    if whole:
        found = _lookup(root, whole.group(1))
        return value if found is None else resolve(found, root, depth + 1)
    inner = _REFERENCE.sub(lambda m: _scalar_text(resolve(m.group(0), root, depth + 1), m.group(0)), value)
    product = _MULTIPLY.fullmatch(inner.replace(' ', ''))
    if product:
        try:
            a, b = (float(v) for v in product.groups())
        except ValueError:
            return value
        return int(a * b) if (a * b).is_integer() else a * b
    return value


def _scalar_text(v, fallback):
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else fallback


class _Section:
    """One mapping of the config (e.g. model.Conv3DModule) with its dotted name, read field by field."""

    def __init__(self, data, name, where, root):
        if not isinstance(data, dict):
            raise BundleError(f'{where}: {name} must be a mapping, got {type(data).__name__}')
        if not all(isinstance(k, str) for k in data):
            raise BundleError(f'{where}: {name} has a key that is not text ({next(k for k in data if not isinstance(k, str))!r})')
        self.data, self.name, self.where, self.root = data, name, where, root

    def fail(self, key, what):
        return BundleError(f'{self.where}: {self.name}.{key} {what}')

    def get(self, key, kind, default=...):
        if key not in self.data:
            if default is ...:
                raise self.fail(key, 'is missing; the bundle\'s run config is incomplete')
            return default
        value = resolve(self.data[key], self.root)
        if isinstance(value, str) and '${' in value:
            raise self.fail(key, f'is the interpolation {value!r}, which this reader does not resolve; write its value')
        ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool), bool: lambda v: isinstance(v, bool),
            str: lambda v: isinstance(v, str), 'ints': lambda v: isinstance(v, list) and bool(v) and
            all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in v)}[kind]
        if not ok(value) or (kind is int and value < 1):
            wanted = {int: 'a positive integer', bool: 'true or false', str: 'a string', 'ints': 'a list of positive integers'}[kind]
            raise self.fail(key, f'must be {wanted}, got {value!r}')
        return value

    def expect(self, key, allowed, default):
        """A field this reader supports with one value (or a few): anything else is a clear error."""
        value = resolve(self.data.get(key, default), self.root)
        if value not in allowed:
            raise self.fail(key, f'is {value!r}; this reader supports {" or ".join(repr(a) for a in allowed)}')
        return value

    def check_known(self, known):
        unknown = sorted(set(self.data) - set(known))
        if unknown:
            raise self.fail(unknown[0], 'is an unknown field; this reader knows the published architecture\'s fields only')

    def target(self, suffix):
        target = self.data.get('_target_')
        if target is not None and (not isinstance(target, str) or not target.endswith(suffix)):
            raise self.fail('_target_', f'is {target!r}; this reader builds {suffix} only (targets are never imported)')


UNET_FIELDS = {'_target_', 'in_channels', 'out_channels', 'f_maps', 'layer_order', 'num_groups', 'conv_padding',
    'conv_kernel_size', 'pool_kernel_size', 'upsample', 'final_size_out', 'n_channels_for_feature', 'n_channels_for_recon',
    'forward_type', 'feature_pool_type', 'crop_each_to_positive_only', 'is3d',
    # Without effect on r or on the weights' names and shapes (training-time or reconstruction-branch settings):
    'final_sigmoid', 'is_segmentation', 'dropout_prob', 'conv_upscale', 'num_levels', 'recon_pool_type',
    'softplus_sigma_reconstruction', 'final_sigma_decoder_initialise_minimal_noise'}
MLP_FIELDS = {'_target_', 'input_size', 'output_size', 'hidden_sizes', 'activation_type', 'normalisation_type',
    'residual', 'norm_first_layer', 'dropout_rate', 'use_dropout'}       # Dropout: identity in eval mode.
MLPS = (('mlp', 'mlp_global'), ('scalar_head', 'mlp_scalar_rwd'), ('bt_head', 'mlp_BT'), ('pairs_head', 'mlp_pairs'))


def _unet_config(s):
    s.target('ResidualUNetSE3D')
    s.check_known(UNET_FIELDS)
    s.expect('in_channels', [1], 1)
    s.expect('conv_kernel_size', [3], 3)
    s.expect('pool_kernel_size', [2], 2)
    s.expect('forward_type', ['entire'], 'patches')
    s.expect('feature_pool_type', ['max'], 'max')
    s.expect('crop_each_to_positive_only', [False], False)
    s.expect('is3d', [True], True)
    out, feature = s.get('out_channels', int), s.get('n_channels_for_feature', int)
    recon = s.get('n_channels_for_recon', int, out - feature)
    if recon + feature != out:
        raise s.fail('out_channels', f'is {out}, not n_channels_for_recon + n_channels_for_feature = {recon + feature}')
    return dict(f_maps=s.get('f_maps', 'ints'), out_channels=out, feature_channels=feature,
        layer_order=s.get('layer_order', str, 'gcr'), num_groups=s.get('num_groups', int, 8),
        conv_padding=s.get('conv_padding', int, 1), upsample=s.get('upsample', str, 'default'),
        feature_size=s.get('final_size_out', int))


def _mlp_config(s):
    s.target('MLP')
    s.check_known(MLP_FIELDS)
    s.expect('normalisation_type', [None, 'none'], 'batch_norm')
    s.expect('norm_first_layer', [False], False)
    return dict(input_size=s.get('input_size', int), output_size=s.get('output_size', int),
        hidden_sizes=s.get('hidden_sizes', 'ints'), activation=s.get('activation_type', str, 'softplus'),
        residual=s.get('residual', bool, True))


def model_config(config, where):
    """SigmaUNetReward's constructor kwargs from a parsed run config (its `model` section)."""
    if not isinstance(config, dict) or 'model' not in config:
        raise BundleError(f'{where}: no "model" section; not the run config of a reward model')
    model = _Section(config['model'], 'model', where, config)
    model.target('Conv3DNetworkEnsemble')
    if model.data.get('external') is not None:
        raise model.fail('external', 'names an external feature network; the sigma-field reward has none')
    for key in ('Conv3DModule', *(theirs for _, theirs in MLPS)):
        if key not in model.data:
            raise model.fail(key, 'is missing; the bundle\'s run config is incomplete')
    kwargs = _unet_config(_Section(model.data['Conv3DModule'], 'model.Conv3DModule', where, config))
    for ours, theirs in MLPS:
        kwargs[ours] = _mlp_config(_Section(model.data[theirs], f'model.{theirs}', where, config))
    return kwargs

#----------------------------------------------------------------------------
# The weights, strictly.

def read_state_dict(data, name, trust_pickle=False):
    """The {name: tensor} state_dict in best_model.pt's bytes (weights_only unless trust_pickle)."""
    try:
        obj = torch.load(io.BytesIO(data), map_location='cpu', weights_only=not trust_pickle)
    except Exception as err:                                    # Unpickling errors come in many types.
        if not trust_pickle and 'weights_only' in str(err):
            raise BundleError(f'{name}: holds pickled objects, which can run code; pass --trust-pickle only if you trust '
                'where it came from') from None
        raise BundleError(f'{name}: not a readable torch file ({type(err).__name__}: {_first_line(err)})') from None
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
        obj = obj['state_dict']
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise BundleError(f'{name}: not a state_dict (a mapping of names to tensors)')
    return obj


def check_state_dict(model, weights, name):
    """BundleError naming the first missing, extra, misshapen or non-finite weight; None when they load strictly."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, extra = sorted(expected.keys() - weights.keys()), sorted(weights.keys() - expected.keys())
    more = lambda keys: f' (and {len(keys) - 1} more)' if len(keys) > 1 else ''
    if missing:
        raise BundleError(f'{name}: missing weight {missing[0]}{more(missing)} that its run config\'s architecture has')
    if extra:
        raise BundleError(f'{name}: unexpected weight {extra[0]}{more(extra)} that its run config\'s architecture lacks')
    for k, shape in expected.items():
        if tuple(weights[k].shape) != shape:
            raise BundleError(f'{name}: weight {k} has shape {list(weights[k].shape)}, its run config asks for {list(shape)}')
        if not weights[k].is_floating_point() or not bool(torch.isfinite(weights[k]).all()):
            raise BundleError(f'{name}: weight {k} is not finite floating point; the file is damaged')


def _build(kwargs, cname):
    """SigmaUNetReward(**kwargs) (on the default device: the meta device to check it first); BundleError naming the run
    config when it cannot be built."""
    from eg3d_rlhf.rewards.sigma_unet import SigmaUNetReward # pylint: disable=import-outside-toplevel
    try:
        return SigmaUNetReward(**kwargs)
    except (ValueError, AssertionError, TypeError, RuntimeError, OverflowError) as err:
        raise BundleError(f'{cname}: its model cannot be built ({" ".join(str(err).split())[:200]})') from None


def load_bundle(path, device='cpu', trust_pickle=False):
    """The bundle at `path` (folder or zip) as a contract.Reward of kind 'sigma-unet' on `device`, in eval mode."""
    wdata, wname, cdata, cname = read_bundle_files(path)
    config = dnnlib.util.decode_yaml(cdata, f'{cname}:', BundleError)
    kwargs = model_config(config, cname)
    with torch.device('meta'):                          # Checked first, allocating nothing: a config may ask for
        shapes = _build(kwargs, cname)                  # terabytes; then the model is the weights' size.
    weights = read_state_dict(wdata, wname, trust_pickle)
    check_state_dict(shapes, weights, wname)
    model = _build(kwargs, cname)
    model.load_state_dict(weights, strict=True)
    info = dict(kind=KIND, config=dict(model.config), bundle=os.path.abspath(path), weights=wname, run_config=cname)
    return Reward(model.to(device).eval(), published_spec(), KIND, info)

#----------------------------------------------------------------------------
