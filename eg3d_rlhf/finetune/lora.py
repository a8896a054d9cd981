"""LoRA adapters on a flow stage's velocity model through peft: wrap its Linear and Conv layers, train only the adapters, merge."""

import importlib.util
import re

import torch
from torch import nn

#----------------------------------------------------------------------------
# LoRA (Hu et al.) adds a low-rank update B A to each wrapped layer's weight, B initialised to zero, so a wrapped model
# starts as the model itself and only A and B train (as DSO fine-tunes TRELLIS). The rank bounds how far a stage can
# drift from its reference. Scale lora_alpha / r = 1. After training, merge() folds B A into the weights and removes
# the adapters: the result is the velocity model's own class with its own state_dict keys, so a saved snapshot is a
# plain flow checkpoint that every tool loads. peft is an optional extra (setup.py: pip install -e '.[lora]').

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
MISSING = '--lora-rank needs `pip install peft`'


def available():
    """Whether peft can be imported (without importing it)."""
    return importlib.util.find_spec('peft') is not None


def _peft():
    if not available():
        raise RuntimeError(MISSING)
    import peft  # pylint: disable=import-outside-toplevel
    return peft


def target_layers(module):
    """Names of the module's Linear and Conv layers (the ones LoRA wraps)."""
    return [name for name, m in module.named_modules() if name and isinstance(m, LAYERS)]


def wrap(velocity, rank, seed=0):
    """The velocity model with LoRA adapters of `rank` on every Linear and Conv layer (wrapped in place: the base
    weights are the model's own, frozen); only the adapters require gradients. Their random A is drawn from `seed`
    (torch's global generator is left as it was)."""
    if rank < 1:
        raise ValueError(f'LoRA rank must be at least 1, got {rank}')
    peft = _peft()
    names = target_layers(velocity)
    if not names:
        raise ValueError(f'{type(velocity).__name__} has no Linear or Conv layer for LoRA to wrap')
    config = peft.LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, init_lora_weights=True,
        target_modules='|'.join(re.escape(n) for n in names))            # A string is matched against whole names.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return peft.get_peft_model(velocity, config)


def merge(wrapped):
    """The plain velocity model with the adapters folded into its weights (B A added), the adapters removed."""
    return wrapped.merge_and_unload()

#----------------------------------------------------------------------------
