"""Loading and saving EG3D network pickles, and rebuilding their networks with this project's classes.

A network pickle (NVIDIA's released `ffhq512-128.pkl` or one of our snapshots) is a dict
{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs', ...} whose networks are persistent classes:
unpickling EXECUTES the Python source embedded in the file. `load_network_pkl` therefore refuses unless the
caller passes `trust=True` (CLI: `--trust-pickle`). Only load files from a source you trust.
"""

import copy
import pickle

import torch

import dnnlib
from torch_utils import misc

#----------------------------------------------------------------------------

SNAPSHOT_KEYS = ('G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs')

# Network classes of an EG3D pickle -> this project's class of the same name and constructor.
PROJECT_CLASSES = {
    'TriPlaneGenerator':    'training.triplane.TriPlaneGenerator',
    'DualDiscriminator':    'training.dual_discriminator.DualDiscriminator',
    'SingleDiscriminator':  'training.dual_discriminator.SingleDiscriminator',
    'Generator':            'training.networks_stylegan2.Generator',
    'Discriminator':        'training.networks_stylegan2.Discriminator',
}

TRUST_MESSAGE = ('loading a network pickle executes the code stored inside it; '
                 'pass trust=True (CLI: --trust-pickle) only for a file from a source you trust')


class UntrustedPickleError(PermissionError):
    """Raised when a pickle would be loaded without the caller saying it trusts the file."""

#----------------------------------------------------------------------------

def load_network_pkl(f, trust=False):
    """Load an EG3D snapshot dict from a path, file:// URL or binary file object.

    Returns a dict with at least the keys in SNAPSHOT_KEYS (missing ones are None). Raises
    UntrustedPickleError unless `trust` is true, ValueError when the file is not an EG3D network pickle.
    """
    name = f if isinstance(f, str) else getattr(f, 'name', '<stream>')
    if not trust:
        raise UntrustedPickleError(f'refusing to load "{name}": {TRUST_MESSAGE}')
    if isinstance(f, str):
        with dnnlib.util.open_url(f) as stream:
            data = _unpickle(stream, name)
    else:
        data = _unpickle(f, name)

    if isinstance(data, torch.nn.Module):   # A bare network: treat it as the generator.
        data = dict(G_ema=data)
    if not isinstance(data, dict) or not any(isinstance(data.get(k), torch.nn.Module) for k in ('G', 'G_ema', 'D')):
        raise ValueError(f'"{name}" is not an EG3D network pickle (expected a dict holding G, D or G_ema networks)')
    for key in ('G', 'D', 'G_ema'):
        if data.get(key) is not None and not isinstance(data[key], torch.nn.Module):
            raise ValueError(f'"{name}": its {key} is a {type(data[key]).__name__}, not a network; the file is damaged')
    for key in SNAPSHOT_KEYS:
        data.setdefault(key, None)
    if data['G_ema'] is None:
        data['G_ema'] = data['G']
    return data


def _unpickle(stream, name):
    try:
        return pickle.load(stream)
    except Exception as err: # pylint: disable=broad-except
        # A damaged (trusted) pickle fails in any way its opcodes and the code it calls may: a length field claiming
        # exabytes (MemoryError, OverflowError), a torch storage cut short (RuntimeError), ...
        text = " ".join(str(err).split())[:200]
        raise ValueError(f'cannot unpickle "{name}": {type(err).__name__}{": " + text if text else ""}') from None


def save_network_pkl(path, data):
    """Write a snapshot dict in EG3D's format, atomically (a crash never leaves a half-written file)."""
    with dnnlib.util.atomic_write(path, 'wb') as f:
        pickle.dump(data, f)

#----------------------------------------------------------------------------

def project_class_for(net):
    """This project's class for a network loaded from a pickle (looked up by class name)."""
    class_name = type(net).__name__
    if class_name not in PROJECT_CLASSES:
        raise ValueError(f'no project class for a pickled "{class_name}"; known: {", ".join(sorted(PROJECT_CLASSES))}')
    return dnnlib.util.get_obj_by_name(PROJECT_CLASSES[class_name])


def rebuild_network(net, device=None, **kwarg_overrides):
    """Build a fresh network of this project's class from `net.init_kwargs` and copy its parameters and buffers.

    This is what EG3D's training loop does on resume: the returned module runs this project's code with
    the pickled weights. `kwarg_overrides` replace constructor arguments (e.g. num_fp16_res).
    """
    cls = project_class_for(net)
    kwargs = dnnlib.EasyDict(copy.deepcopy(net.init_kwargs))
    kwargs.update(kwarg_overrides)
    new = cls(*net.init_args, **kwargs)
    misc.copy_params_and_buffers(net, new, require_all=True)
    new = new.to(device or _device_of(net))
    new.train(net.training).requires_grad_(any(p.requires_grad for p in net.parameters()))
    for attr in ('neural_rendering_resolution', 'rendering_kwargs'):  # Set after construction by EG3D scripts.
        if hasattr(net, attr):
            setattr(new, attr, copy.deepcopy(getattr(net, attr)))
    return new


def _device_of(net):
    for tensor in misc.params_and_buffers(net):
        return tensor.device
    return torch.device('cpu')

#----------------------------------------------------------------------------
