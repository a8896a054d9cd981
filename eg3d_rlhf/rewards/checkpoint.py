"""Reward-model checkpoints: weights, architecture config, input spec and normalisation (safetensors or weights_only .pt)."""

import io
import os

import torch

import dnnlib
from dnnlib.util import file_problem, open_regular
from eg3d_rlhf.rewards import build_reward, bundle
from eg3d_rlhf.rewards.contract import InputSpec, InputSpecError, Reward
from torch_utils import safetensors_file

#----------------------------------------------------------------------------
# A checkpoint is a dict of tensors, strings, numbers, lists and dicts only, so torch.load(weights_only=True) reads
# it without running any code:
#   format      FORMAT (FORMATS lists the ones read)
#   kind        'sigma' | 'depth' | 'pointcloud'
#   config      the model's constructor kwargs (model.config)
#   state_dict  its weights
#   input       the reward contract (contract.InputSpec.to_dict()): the slab grid it was trained on, as in a bank's
#               meta.json, the normalisation of raw sigma and the axis order. Format 1 stored only
#               {'normalisation': 'self_minmax_0_100', 'slab': ...}, which reads as the same contract.
#   training    how it was trained (bank, labels, settings, held-out results); informational
# save_reward writes it as a safetensors file when the path ends in .safetensors (torch_utils/safetensors_file.py:
# the weights as tensors 'state_dict.<name>', the rest as JSON metadata, the format under 'eg3d_rlhf.format'), else
# as a torch zip; read_reward tells them apart by their first bytes, so .pt files from before still load.

FORMAT = 'eg3d_rlhf.reward/2'
FORMATS = ('eg3d_rlhf.reward/1', FORMAT)


# Constructor arguments added after checkpoints were written, with the value those checkpoints were built with: a
# stored config that lacks one gets it (a 'sigma' checkpoint from before the levels trunk is the learned CNN with one
# head; one from before mesh statistics reads none), so build_reward's newer defaults never change what an old file
# means.
ADDED_ARGUMENTS = {'sigma': dict(trunk='cnn', members=1, mesh_levels=())}


class RewardCheckpointError(ValueError):
    """A file that is not a reward checkpoint this version can read."""


CONFIG_LIMIT = 1 << 20          # No reward config number (a width, a count, a level) is larger; a damaged one may be 1e308.


def check_config(config, where='config'):
    """ValueError naming the entry unless every number in a checkpoint's model `config` (nested lists and dicts too)
    is finite and at most CONFIG_LIMIT in size: building a model of a damaged config could take forever or all memory
    before its weights are ever compared."""
    if isinstance(config, dict):
        for key, value in config.items():
            check_config(value, f'{where}.{key}')
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            check_config(value, f'{where}[{i}]')
    elif isinstance(config, (int, float)) and not isinstance(config, bool) and not abs(config) <= CONFIG_LIMIT:
        raise ValueError(f'{where} is {config:g}; expected a finite number of size at most {CONFIG_LIMIT}: the file was '
            'edited or is damaged, retrain or restore it')


def check_weights(build, kind, config, weights):
    """ValueError unless the model `config` describes has exactly the stored weights' names and shapes (checked on
    the meta device first, so a config asking for huge layers allocates nothing) and every weight is finite."""
    with torch.device('meta'):
        skeleton = build(kind, **config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = {k: tuple(v.shape) if torch.is_tensor(v) else None for k, v in weights.items()}
    if stored != expected:
        differ = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
        more = ' ...' if len(differ) > 3 else ''
        raise ValueError(f'its config does not describe its weights ({", ".join(differ[:3])}{more} differ); the file was '
            'edited or is damaged: retrain or restore it')
    dtypes = {k: v.dtype for k, v in skeleton.state_dict().items()}
    wrong = [k for k, v in weights.items() if v.dtype != dtypes[k]]
    if wrong:
        raise ValueError(f'weight {wrong[0]} is {weights[wrong[0]].dtype}, the model\'s is {dtypes[wrong[0]]}; the file '
            'was edited or is damaged: retrain or restore it')
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f'weight {bad[0]} holds nan or inf; retrain the reward model')


def save_reward(path, model, kind, spec, training=None):
    """Write a checkpoint atomically, as safetensors when `path` ends in .safetensors, else as a torch zip; `spec` is
    the InputSpec (or, for the default contract, the slab description)."""
    spec = spec if isinstance(spec, InputSpec) else InputSpec(slab=dict(spec))
    data = dict(format=FORMAT, kind=kind, config=dict(model.config),
        state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        input=spec.to_dict(), training=dict(training or {}))
    if safetensors_file.is_safetensors_path(path):
        safetensors_file.save(path, data)
        return
    with dnnlib.util.atomic_write(path, 'wb') as f:
        torch.save(data, f)


def load_reward(path, device='cpu', trust_pickle=False):
    """The checkpoint as a contract.Reward (model in eval mode on `device`): a safetensors file, or a .pt read with
    weights_only=True; a published reward bundle (its zip or folder, rewards/bundle.py) reads too, its weights with
    weights_only unless trust_pickle.
    Building the network draws initial weights that the file then replaces: torch's random state is left as it was,
    so a run's random stream does not depend on how often, or in which process, a reward was read."""
    with torch.random.fork_rng(devices=[]):
        return read_reward(path, device, trust_pickle)


def read_reward(path, device, trust_pickle):
    """load_reward's reading, which draws from torch's random state."""
    if not os.path.exists(path):
        raise RewardCheckpointError(f'{path}: no such reward checkpoint')
    problem = None if os.path.isdir(path) else file_problem(path)      # A FIFO would block every read below.
    if problem is not None:
        raise RewardCheckpointError(problem)
    if bundle.is_bundle(path):
        try:
            return bundle.load_bundle(path, device, trust_pickle=trust_pickle)
        except bundle.BundleError as err:
            raise RewardCheckpointError(str(err)) from None
    if safetensors_file.is_safetensors(path):
        try:
            data = safetensors_file.load(path, FORMATS)
        except ValueError as err:
            raise RewardCheckpointError(str(err)) from None
    else:
        data = read_pt(path)
    return reward_of(path, data, device)


def read_pt(path):
    """The dict of a .pt checkpoint, read with weights_only=True."""
    with open_regular(path, 'rb', error=RewardCheckpointError) as f:
        blob = f.read()
    try:
        data = torch.load(io.BytesIO(blob), map_location='cpu', weights_only=True)
    except Exception as err:                                    # Unpickling errors come in many types.
        first = str(err).strip().splitlines()[0] if str(err).strip() else ''
        raise RewardCheckpointError(f'{path}: not a reward checkpoint ({type(err).__name__}: {first})') from None
    if not isinstance(data, dict) or data.get('format') not in FORMATS:
        raise RewardCheckpointError(f'{path}: not a reward checkpoint of format {" or ".join(FORMATS)}')
    return data


def reward_of(path, data, device):
    """The contract.Reward of a checkpoint dict, its weights loaded strictly into the model its config describes."""
    try:
        spec = InputSpec.from_dict(data.get('input'))
    except InputSpecError as err:
        raise RewardCheckpointError(f'{path}: {err}') from None
    try:
        config, weights = dict(data.get('config') or {}), dict(data.get('state_dict') or {})
        config = {**ADDED_ARGUMENTS.get(data.get('kind'), {}), **config}
        check_config(config)
        check_weights(build_reward, data.get('kind'), config, weights)
        model = build_reward(data.get('kind'), **config)
        model.load_state_dict(weights)
    except (TypeError, ValueError, RuntimeError, LookupError, AttributeError, ArithmeticError) as err:
        # Unknown kind, config or weights of another model, or config entries of the wrong type (channels '').
        text = ' '.join(str(err).split()) or type(err).__name__          # One line, even load_state_dict's list.
        raise RewardCheckpointError(f'{path}: {data.get("kind")} reward: {text[:300]}') from None
    info = {k: v for k, v in data.items() if k != 'state_dict'}
    return Reward(model.to(device).eval(), spec, data['kind'], info)

#----------------------------------------------------------------------------
# One frozen reward per file and device per process: the fine-tuning run checks the file's kind, the reward phase
# scores with it and the panel reports with it, and all three read one load (a changed file, by size or time, is read
# again). Callers must not train or modify what it returns.

_SHARED = {}

def shared_reward(path, device='cpu'):
    """load_reward(path, device), read once per process while the file is unchanged; its model frozen (no grad)."""
    st = os.stat(path) if os.path.isfile(path) else None
    key = (os.path.realpath(path), None if st is None else (st.st_size, st.st_mtime_ns), str(torch.device(device)))
    if key not in _SHARED:
        reward = load_reward(path, device)
        reward.model.eval().requires_grad_(False)
        _SHARED[key] = reward
    return _SHARED[key]

#----------------------------------------------------------------------------
