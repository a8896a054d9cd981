"""The reward fine-tuning options: one config object with help text and validation, from which train.py's flags come."""

import dataclasses
import math
import typing

import click

from eg3d_rlhf.generators.base import seed_ranges
from eg3d_rlhf.rewards import REWARDS

#----------------------------------------------------------------------------
# Each field is one setting, stated once: its default, its help, its range. train.py derives its --reward-* flags from
# these fields (click_options), the embedded demo overrides some of them by name (synthetic/demo.py), and
# RewardPhase and RewardPanel take the validated values. A field's flag is its name with dashes.

LOSS_MODES = ('clip', 'standardised', 'pairwise')
TAU_DEFAULT = 0.1                       # --tau when not given (it is given only with --reward-loss=pairwise).
REDUCTIONS = ('mean', 'sum')            # --sigma-reduce: how the density consistency of a batch's samples adds up.
OPTIMIZERS = ('shared', 'own')          # --reward-optimizer: the reward phase on G's optimizer, or on its own.


class ConfigError(ValueError):
    """A value or combination of reward options that cannot train; the message names the flag."""


def option(default, help, min=None, choices=None, flag=True, is_flag=False, metavar=None):
    return dataclasses.field(default=default, metadata=dict(help=help, min=min, choices=choices, flag=flag, is_flag=is_flag,
        metavar=metavar))


def flag_name(field_name):
    """'lambda_r' -> '--lambda-r'."""
    return '--' + field_name.replace('_', '-')


@dataclasses.dataclass
class RewardFinetuneConfig:
    reward:             str = option('none', 'Reward fine-tuning on the slab sigma with this kind of reward model',
                            choices=lambda: (*sorted(REWARDS), 'none'))
    reward_model:       typing.Optional[str] = option(None, 'Reward checkpoint (tools/train_reward.py)  [default: the bundled one of --reward; with --generator=flow, the bundled flow reward]',
                            metavar='PT')
    lambda_r:           float = option(10.0, 'Weight of the reward loss', min=0)
    lambda_sigma:       float = option(0.01, 'Weight of the density consistency to the starting G_ema', min=0)
    sigma_box_points:   int = option(0, 'Density consistency also at this many random points of the whole box', min=0)
    sigma_grid:         int = option(0, 'Density consistency at every point of an N^3 grid over the whole box instead of random slab points (0 = off)', min=0)
    sigma_psi:          typing.Optional[float] = option(None, 'Truncation psi of the density consistency\'s own samples  [default: it reuses the reward\'s]', min=0)
    sigma_cutoff:       typing.Optional[int] = option(None, 'Truncation cutoff with --sigma-psi  [default: every layer]', min=1)
    sigma_reduce:       str = option('mean', 'Density consistency over the batch: the mean of the samples\' L1, or their sum',
                            choices=lambda: REDUCTIONS)
    lambda_image:       float = option(0.0, 'Weight of the raw-image consistency to the starting G_ema', min=0)
    reward_loss:        str = option('clip', 'clip: -clip(r); standardised: running mean/std first; pairwise: DreamDPO',
                            choices=lambda: LOSS_MODES)
    tau:                typing.Optional[float] = option(None, f'Reward gap above which pairwise pushes the loser away  [default: {TAU_DEFAULT}]', min=0)
    reward_psi:         float = option(1.0, 'Truncation psi of the samples the reward scores while tuning', min=0)
    reward_cutoff:      typing.Optional[int] = option(None, 'Truncation cutoff with --reward-psi  [default: every layer]', min=1)
    reward_every:       int = option(1, 'Run the reward phase every N steps', min=1)
    reward_optimizer:   str = option('shared', "shared: the reward phase steps G's Adam; own: an Adam of its own at --glr",
                            choices=lambda: OPTIMIZERS)
    reward_batch:       typing.Optional[int] = option(None, 'Samples per reward pass  [default: --batch-gpu]', min=1)
    reward_recompute:   bool = option(False, 'Gradient checkpointing of the slab decoder passes (less GPU memory)', is_flag=True)
    panel_seeds:        str = option('2000-2199', 'Seeds scored every tick for the reward report, or none', metavar='LIST')
    panel_psi:          float = option(0.7, 'Truncation psi of the panel seeds\' samples (cutoff 14)', min=0)
    # Not flags: fixed parts of the method, stated here so RewardPhase restates nothing.
    clip:               float = option(10.0, 'Rewards are clipped to [-clip, clip] before they enter the loss', min=0, flag=False)
    sigma_points:       int = option(4096, 'Slab points per sample for the density consistency', min=1, flag=False)
    pair_noise:         float = option(0.3, 'pairwise: standard deviation of the z offsets making the two samples', min=0, flag=False)
    keep_w_avg:         bool = option(True, "Stop G's running w_avg update while tuning", flag=False)

    @classmethod
    def flags(cls):
        """The fields that are command-line flags, in order."""
        return [f for f in dataclasses.fields(cls) if f.metadata['flag']]

    def __post_init__(self):
        self.validate()

    def validate(self):
        """ConfigError (one line naming the flag) for a value of the wrong type, non-finite, out of range or of an unknown
        choice, or a combination that cannot train."""
        for f in dataclasses.fields(self):
            check_value(f, getattr(self, f.name))
        if self.tau is not None and self.reward_loss != 'pairwise':
            raise ConfigError(f"--tau is the pairwise loss's threshold; --reward-loss={self.reward_loss} does not use it")
        if self.sigma_grid == 1:
            raise ConfigError('--sigma-grid=1: a grid needs at least 2 points per axis (0 = random slab points)')
        if self.sigma_grid and self.sigma_box_points:
            raise ConfigError('--sigma-box-points adds random box points to the slab points; --sigma-grid already covers '
                'the whole box: give one of them')
        if self.sigma_cutoff is not None and self.sigma_psi is None:
            raise ConfigError('--sigma-cutoff is the cutoff of --sigma-psi: give --sigma-psi too')

    @property
    def enabled(self):
        return self.reward != 'none'

    @property
    def has_panel(self):
        return self.panel_seeds.strip().lower() != 'none'

    @property
    def tau_value(self):
        return TAU_DEFAULT if self.tau is None else float(self.tau)

    def phase_options(self):
        """The options RewardPhase reads (plain types, so they can go into training_options.json)."""
        skip = ('reward_every', 'reward_optimizer', 'panel_seeds', 'panel_psi')
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}

#----------------------------------------------------------------------------

OPTIONAL = {typing.Optional[str]: str, typing.Optional[float]: float, typing.Optional[int]: int}

def check_value(field, value):
    """ConfigError naming the flag (or the field, for one that is not a flag) when `value` cannot be its value."""
    meta, kind = field.metadata, OPTIONAL.get(field.type, field.type)
    flag = flag_name(field.name) if meta['flag'] else field.name
    if value is None:
        if field.type not in OPTIONAL:
            raise ConfigError(f'{flag}: a value is needed')
        return
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f'{flag}={value}: expected true or false')
    if kind is str and not isinstance(value, str):
        raise ConfigError(f'{flag}={value}: expected text')
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        raise ConfigError(f'{flag}={value}: expected a finite number')
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f'{flag}={value}: expected a whole number')
    if meta['min'] is not None and value < meta['min']:
        raise ConfigError(f'{flag}={value}: must be at least {meta["min"]}')
    if meta['choices'] is not None and value not in meta['choices']():
        raise ConfigError(f'{flag}={value}: choose one of {", ".join(meta["choices"]())}')
    if meta['metavar'] == 'LIST' and value.strip().lower() != 'none':           # Seed lists ('0-99,200'), or none.
        try:
            seed_ranges(value)
        except ValueError as err:
            raise ConfigError(f'{flag}: {err}') from None

#----------------------------------------------------------------------------

def click_options_of(cls, skip=()):
    """A decorator adding one click option per flag field of a config dataclass (but those in `skip`, which the
    command declares itself). Every option defaults to None (unset), so the command can tell which ones were given;
    the config supplies the defaults."""
    def decorate(func):
        for f in reversed([f for f in cls.flags() if f.name not in skip]):
            meta, name = f.metadata, flag_name(f.name)
            if meta['is_flag']:
                func = click.option(name, help=meta['help'], is_flag=True, default=None)(func)
                continue
            shown = '' if f.default is None or '[default' in meta['help'] else f'  [default: {f.default}]'
            shown += '' if meta['min'] is None else f'  [x>={meta["min"]}]'
            kind = click.Choice(list(meta['choices']())) if meta['choices'] is not None else OPTIONAL.get(f.type, f.type)
            metavar = meta['metavar'] or {float: 'FLOAT', int: 'INT'}.get(kind, None)
            func = click.option(name, help=meta['help'] + shown, type=kind, default=None, metavar=metavar)(func)
        return func
    return decorate


def given_options(cls, options):
    """{field: value} of a config dataclass's fields that `options` gives (None and False mean "not given"), each
    checked (ConfigError naming the flag)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    given = {name: options[name] for name in fields if options.get(name) is not None and options.get(name) is not False}
    for name, value in given.items():
        check_value(fields[name], value)
    return given


click_options = click_options_of(RewardFinetuneConfig)


def from_options(options):
    """RewardFinetuneConfig from a dict holding (some of) its fields, None meaning "not given". ConfigError naming the
    flag for a bad value first, then for a reward option given without --reward, then for a bad combination."""
    given = given_options(RewardFinetuneConfig, options)
    if given.get('reward', 'none') == 'none':
        extra = [k for k in given if k != 'reward']
        if extra:
            raise ConfigError(f'{flag_name(extra[0])} needs --reward={"|".join(sorted(REWARDS))}')
    return RewardFinetuneConfig(**given)

#----------------------------------------------------------------------------
