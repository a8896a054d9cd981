"""Config machinery of the methods: fields with help and validation, from which flags and YAML files are read."""

import dataclasses
import math
import os
import typing

import click

import dnnlib
from eg3d_rlhf.generators.base import seed_ranges

#----------------------------------------------------------------------------
# A method's settings are one dataclass. Each field is one setting, stated once: its default, its help, its range.
# train.py derives its flags from the fields (click_options_of), a YAML file (--config) names the same fields, and
# the runner takes the validated object. A field's flag is its name with dashes.

class ConfigError(ValueError):
    """A value or combination of options that cannot run; the message names the flag (a usage error, exit 2)."""


def check_aggregate_lambda(kind, lam):
    """ConfigError when --aggregate-lambda is set for a --reward-aggregate that has no spread to weigh."""
    if kind in ('mean', 'min') and lam != 1.0:
        raise ConfigError(f'--aggregate-lambda weighs the spread of mean-std and uwo; --reward-aggregate={kind} has none')


def check_stop_options(cfg, patience):
    """ConfigError when a setting of the --stop-at-peak rule (--peak-margin, --disagreement-stop, --peak-noise,
    --peak-patience; `patience` the method's default) is given without the rule."""
    given = [flag for flag, changed in (('--peak-margin', cfg.peak_margin != 0.2),
        ('--disagreement-stop', cfg.disagreement_stop != 2.0), ('--peak-noise', cfg.peak_noise != 2.0),
        ('--peak-patience', cfg.peak_patience != patience)) if changed]
    if given and not cfg.stop_at_peak:
        raise ConfigError(f'{given[0]} is for --stop-at-peak')


class RunError(RuntimeError):
    """A method cannot start or go on for a reason outside its options (a file, a device); one line (exit 1)."""


def option(default, help, min=None, below=None, choices=None, flag=True, is_flag=False, metavar=None, above=None, max=None,
        names=None):
    """A config field: default, help text, bounds (min and max inclusive, above and below exclusive), choices (a
    callable, so registries can grow), flag or not, and the names its flag and YAML key go by (names: the first is
    the one shown, the rest are aliases; None = the field's name)."""
    return dataclasses.field(default=default, metadata=dict(help=help, min=min, below=below, above=above, max=max,
        choices=choices, flag=flag, is_flag=is_flag, metavar=metavar, names=names))


def flag_name(field_name):
    """'lambda_r' -> '--lambda-r'."""
    return '--' + field_name.replace('_', '-')


def flags_of(f):
    """Every flag of a field, the shown one first: ['--variant', '--ablation']."""
    return [flag_name(n) for n in (f.metadata['names'] or (f.name,))]


OPTIONAL = {typing.Optional[str]: str, typing.Optional[float]: float, typing.Optional[int]: int}

def check_value(field, value):
    """ConfigError naming the flag (or the field, for one that is not a flag) when `value` cannot be its value."""
    meta, kind = field.metadata, OPTIONAL.get(field.type, field.type)
    flag = flags_of(field)[0] if meta['flag'] else field.name
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
    if meta['below'] is not None and value >= meta['below']:
        raise ConfigError(f'{flag}={value}: must be below {meta["below"]}')
    if meta['above'] is not None and value <= meta['above']:
        raise ConfigError(f'{flag}={value}: must be above {meta["above"]}')
    if meta['max'] is not None and value > meta['max']:
        raise ConfigError(f'{flag}={value}: must be at most {meta["max"]}')
    if meta['choices'] is not None and value not in meta['choices']():
        raise ConfigError(f'{flag}={value}: choose one of {", ".join(meta["choices"]())}')
    if meta['metavar'] == 'LIST' and value.strip().lower() != 'none':           # Seed lists ('0-99,200'), or none.
        try:
            seed_ranges(value)
        except ValueError as err:
            raise ConfigError(f'{flag}: {err}') from None

#----------------------------------------------------------------------------

class MethodConfig:
    """Base of a method's config dataclass: every field checked on construction, then validate()'s combinations."""

    @classmethod
    def flags(cls):
        """The fields that are command-line flags, in order."""
        return [f for f in dataclasses.fields(cls) if f.metadata['flag']]

    @classmethod
    def from_options(cls, options):
        """The config of the fields `options` gives (None and False mean "not given"); ConfigError naming the flag."""
        return cls(**given_options(cls, options))

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check_value(f, getattr(self, f.name))
        self.validate()

    def validate(self):
        """ConfigError (one line naming the flag) for a combination that cannot run; fields are checked already."""

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def field(cls, name):
        """The dataclass field `name`."""
        return next(f for f in dataclasses.fields(cls) if f.name == name)


def given_options(cls, options):
    """{field: value} of a config dataclass's fields that `options` gives (None and False mean "not given"), each
    checked (ConfigError naming the flag)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    given = {name: options[name] for name in fields if options.get(name) is not None and options.get(name) is not False}
    for name, value in given.items():
        check_value(fields[name], value)
    return given

#----------------------------------------------------------------------------

def click_option_args(f):
    """(flags and name, keyword arguments) of the click option of one flag field; it defaults to None (unset), so a
    command can tell what was given."""
    meta, name = f.metadata, [*flags_of(f), f.name]
    if meta['is_flag']:
        return name, dict(help=meta['help'], is_flag=True, default=None)
    shown = '' if f.default is None or '[default' in meta['help'] else f'  [default: {f.default}]'
    shown += '' if meta['min'] is None else f'  [x>={meta["min"]}]'
    shown += '' if meta['below'] is None else f'  [x<{meta["below"]}]'
    shown += '' if meta['above'] is None else f'  [x>{meta["above"]}]'
    shown += '' if meta['max'] is None else f'  [x<={meta["max"]}]'
    kind = click.Choice(list(meta['choices']())) if meta['choices'] is not None else OPTIONAL.get(f.type, f.type)
    metavar = meta['metavar'] or {float: 'FLOAT', int: 'INT'}.get(kind, None)
    return name, dict(help=meta['help'] + shown, type=kind, default=None, metavar=metavar)


def click_option_of(f):
    """The click option decorator of one flag field."""
    names, kwargs = click_option_args(f)
    return click.option(*names, **kwargs)


def click_param_of(f):
    """The click.Option of one flag field (for a command built from a parameter list)."""
    names, kwargs = click_option_args(f)
    return click.Option(names, **kwargs)


def click_options_of(*classes, skip=()):
    """A decorator adding one click option per flag field of config dataclasses, in order; a name two configs share
    is declared once (by the first), and names in `skip` are the command's own."""
    fields, seen = [], set(skip)
    for cls in classes:
        for f in cls.flags():
            if f.name not in seen:
                seen.add(f.name)
                fields.append(f)
    def decorate(func):
        for f in reversed(fields):
            func = click_option_of(f)(func)
        return func
    return decorate

#----------------------------------------------------------------------------
# YAML run files: `train.py --config run.yaml` reads a mapping of option names (a config's field names, or the
# command's other options, underscores or dashes, or a flag's alias) as if they were given on the command line; flags given override.
# Each value is read as the text written (a null leaves the option unset) and converted by the option's own type, as
# a flag's would be: `seed: 1:30` is refused, never YAML 1.1's 90. A run file is shared and downloaded, so it cannot
# set what only the person typing may grant: FLAGS_ONLY, each with why (config_file.py does not save them either).

MAX_YAML_BYTES = 1 << 20

FLAGS_ONLY = {
    'trust_pickle': 'it lets the --resume and --inception pickles run code',
    'force':        'it overwrites files',
    'save_config':  'it writes a file',
    'resume_run':   'it goes on writing into an existing run folder',
    'sr_module':    'it imports code by name',
    'config':       'it reads another file of options',
}


def read_yaml(path, command):
    """{option name: value} of a YAML file for a click command, each value converted by the option's own type (its
    ranges checked); ConfigError naming the file and the key otherwise (an option of FLAGS_ONLY, a key given twice
    in any spelling)."""
    blob = dnnlib.util.read_bounded(path, MAX_YAML_BYTES, ConfigError, 'a file of options', prefix='--config: ')
    data = dnnlib.util.decode_yaml(blob, f'--config: {path}:', ConfigError, as_text=True)
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f'--config: {path} must hold a mapping of option names to values')
    params = {p.name: p for p in command.params if isinstance(p, click.Option)}
    spellings = {flag.lstrip('-').replace('-', '_'): p.name for p in params.values() for flag in p.opts}
    ctx, values, spelt = click.Context(command), {}, {}
    for key, value in data.items():
        name = spellings.get(key.replace('-', '_'), key.replace('-', '_'))    # An alias (variant) names its option.
        if name in FLAGS_ONLY:
            raise ConfigError(f'--config: {path}: {key} may not be set by a file ({FLAGS_ONLY[name]}); pass '
                f'{flag_name(name)} on the command line')
        if name not in params:
            raise ConfigError(f'--config: {path}: {key} is not an option; use the flags\' names (train.py --help)')
        if name in spelt:
            raise ConfigError(f'--config: {path}: {spelt[name]} and {key} are the same option; give it once')
        spelt[name] = key
        if not isinstance(value, (str, type(None))):
            raise ConfigError(f'--config: {path}: {key}: expected a single finite value')
        if value is None:
            continue
        try:
            values[name] = params[name].type_cast_value(ctx, value)
        except click.BadParameter as err:
            long = len(value) > 80                      # A hex number of 300 digits, say: shown by its start and length.
            shown = err.message.replace(value, f'{value[:6]}...({len(value)} characters)') if long else err.message
            raise ConfigError(f'--config: {path}: {key}: {shown[:300]}') from None
    return values


def with_yaml(kwargs, explicit, path, command):
    """(kwargs, explicit) with a YAML file's options filled in where no flag gave them; the file's names count as
    given (the embedded demo does not override them)."""
    if path is None:
        return kwargs, explicit
    if not os.path.isfile(path):
        raise ConfigError(f'--config: {path} does not exist')
    values = {k: v for k, v in read_yaml(path, command).items() if k not in explicit}
    return {**kwargs, **values}, set(explicit) | set(values)

#----------------------------------------------------------------------------
