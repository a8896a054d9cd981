"""The method registry: which (generator family, method) pairs train.py runs, each a config and a runner."""

import dataclasses
import json
import os
import typing

import dnnlib
from eg3d_rlhf.finetune import circular_run
from eg3d_rlhf.finetune import gan_run
from eg3d_rlhf.finetune import grpo_run
from eg3d_rlhf.finetune import run_dir as runs
from eg3d_rlhf.finetune.circular_config import CircularDPOConfig
from eg3d_rlhf.finetune.config import RewardFinetuneConfig
from eg3d_rlhf.finetune.grpo_config import GRPOConfig
from eg3d_rlhf.finetune.unpaired_config import UnpairedConfig
from eg3d_rlhf.finetune.options import ConfigError, flag_name

#----------------------------------------------------------------------------
# A method is a config dataclass (options.MethodConfig: its flags, help, validation and YAML names) and a runner
# run(config, common), where common holds train.py's other options (outdir, resume, seed, device, ...). train.py's
# flags are the union of every method's config fields and the options the methods share; adding a method is one
# config, one runner and one register() line here.

@dataclasses.dataclass(frozen=True)
class Method:
    family:     str                 # Generator family it tunes (generators/registry.py): --generator.
    name:       str                 # --method.
    title:      str                 # Its name in messages ('EG3D', 'Circular-DPO').
    config:     type                # Its config dataclass (an options.MethodConfig).
    run:        typing.Callable     # run(config, common) -> summary or None.
    resolve:    typing.Callable = None  # (options, explicit) -> (config, common); None = config.from_options.
    reads:      tuple = None        # train.py options it reads besides its config's; None = every one no other method owns.
    help:       str = ''            # One line for --method's help and the docs.
    command:    str = None          # `eg3d-rlhf train COMMAND`: this method's options alone; None = its name.

    @property
    def command_name(self):
        return self.command or self.name

    def fields(self):
        return {f.name for f in self.config.flags()}

    def options(self, names, methods):
        """The options among `names` (a command's) that this method reads: its config's fields, then its `reads`, or
        (None) every option that none of the other `methods` owns."""
        owned = set().union(*(m.fields() for m in methods if m is not self)) - self.fields()
        return self.fields() | (set(names) - owned if self.reads is None else set(self.reads))

    def configure(self, options, explicit):
        """(config, common) of train.py's options: the config built once, common an EasyDict of the options."""
        if options.get('resume_run') and 'resume_run' in self.fields():
            options = run_options(options, explicit, self.fields() | {'seed'})
        if self.resolve is not None:
            return self.resolve(options, explicit)
        common = dnnlib.EasyDict(options)
        common.device = runs.pick_device(common.device)
        return self.config.from_options(options), common


def run_options(options, explicit, names):
    """options with each of `names` that the command line (or --config) did not give taken from --resume-run's
    options.json: a resumed run goes on with its own settings. An unreadable file changes nothing here; the runner's
    check of the folder names it."""
    try:
        with open(os.path.join(options['resume_run'], 'options.json'), encoding='utf-8') as f:
            before = json.load(f)
    except (OSError, ValueError):
        return options
    if not isinstance(before, dict):
        return options
    keep = {k: before[k] for k in names if before.get(k) is not None and k not in explicit and k != 'resume_run'}
    if not isinstance(keep.get('seed', 0), int) or isinstance(keep.get('seed'), bool):
        del keep['seed']                                # The config checks its own fields; the seed is checked here.
    return dict(options, **keep)


METHODS = {}

def register(method):
    """Add a method under (family, name); a duplicate is refused."""
    key = (method.family, method.name)
    if key in METHODS:
        raise ValueError(f'a method {method.name} of the {method.family} family is registered already')
    METHODS[key] = method
    return method


def families():
    return list(dict.fromkeys(f for f, _ in METHODS))


def names():
    return list(dict.fromkeys(n for _, n in METHODS))


def choose(family=None, name=None):
    """The Method of --generator and --method, each inferred from the other when not given (the first registered)."""
    if family is None:
        family = next((f for f, n in METHODS if n == name), None) if name else None
        family = family or families()[0]
    if name is None:
        name = next(n for f, n in METHODS if f == family)
    if (family, name) not in METHODS:
        known = [n for f, n in METHODS if f == family]
        raise ConfigError(f'--method={name} does not apply to --generator={family}; use {" or ".join(known)}')
    return METHODS[(family, name)]


def by_command(command):
    """The Method run by `eg3d-rlhf train COMMAND`, or None."""
    return next((m for m in METHODS.values() if m.command_name == command), None)


def check_given(method, explicit, command_options):
    """ConfigError naming the first option given (explicit) that `method` does not read, and the method that does."""
    others = [m for m in METHODS.values() if m is not method]
    owned = set().union(*(m.fields() for m in others)) - method.fields()
    reads = method.options(command_options, METHODS.values())
    for name in sorted(set(explicit) - reads):
        owner = next((m for m in others if name in m.fields() or (m.reads is None and name not in owned)), None)
        if owner is None:
            raise ConfigError(f'{flag_name(name)} does not apply to --method={method.name}')
        article = 'an' if owner.title[0] in 'AEIOU' else 'a'
        if owner.family == method.family:
            raise ConfigError(f'{flag_name(name)} is {article} {owner.title} option: add --method={owner.name}')
        takes = f'; --generator={method.family} takes {", ".join(flag_name(r) for r in method.reads)} and the ' \
            f'{method.title} flags' if method.reads is not None else ''
        raise ConfigError(f'{flag_name(name)} is {article} {owner.title} option: add --generator={owner.family}{takes}')

#----------------------------------------------------------------------------

register(Method('eg3d', 'gan', 'EG3D', RewardFinetuneConfig, gan_run.run, resolve=gan_run.resolve,
    help='GAN training of the tri-plane generator; --reward adds reward fine-tuning', command='eg3d'))
register(Method('flow', 'circular-dpo', 'Circular-DPO', CircularDPOConfig, circular_run.run,
    reads=('generator', 'method', 'config', 'outdir', 'resume', 'reward_model', 'seed', 'device', 'desc', 'dry_run',
        'report_to', 'verbose'),
    help='preference alignment of a multi-stage flow, back to front'))
register(Method('flow', 'grpo', 'Flow-GRPO', GRPOConfig, grpo_run.run,
    reads=('generator', 'method', 'config', 'outdir', 'resume', 'reward_model', 'seed', 'device', 'desc', 'dry_run',
        'verbose'),
    help='online RL of a multi-stage flow from a reward: groups per condition, SDE log-probabilities, clipped ratio, KL'))
register(Method('flow', 'unpaired', 'Unpaired', UnpairedConfig, grpo_run.run_unpaired,
    reads=('generator', 'method', 'config', 'outdir', 'resume', 'reward_model', 'seed', 'device', 'desc', 'dry_run',
        'verbose'),
    help='one stage of a multi-stage flow from 1-5 ratings (label.py rate): DRO or KTO'))

#----------------------------------------------------------------------------
