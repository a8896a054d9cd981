"""`train.py --save-config`: a run's resolved options written as the YAML file that `train.py --config` reads."""

import os
import shlex

import click

import dnnlib
from eg3d_rlhf.finetune.options import FLAGS_ONLY, RunError, flag_name

#----------------------------------------------------------------------------
# What is saved: every option of train.py that the chosen method reads (its config's fields and the command's other
# options), at the value the run would use: a --recipe's and the embedded demo's values filled in, a "[default:
# varies]" option at its --cfg preset's value, a reward model as an absolute path. A config field left unset stays
# unset (null, its default in a comment: some fields may only be given with others, --lambda-r with --reward), and
# --device is kept as given (auto stays auto: the pick depends on the machine). Not saved: --dry-run and the options
# that only a flag may set (options.FLAGS_ONLY: --trust-pickle, --force, ...; those given are named in a comment).
# Reading the file back gives the same options, each one set counted as given (so the embedded demo adds nothing to a
# saved demo run: its values are in the file).

NOT_SAVED = (*FLAGS_ONLY, 'dry_run')
AS_GIVEN = ('device',)
ABOUT_SAVING = ('config', 'save_config', 'force')      # Flags of this command line's saving, not of the run.


def option_names(method, command, methods):
    """train.py's option names that `method` reads, in the command's order (methods: every registered Method)."""
    names = [p.name for p in command.params if isinstance(p, click.Option) and p.name not in NOT_SAVED]
    reads = method.options(names, methods)
    return [name for name in names if name in reads]


def yaml_value(value):
    """An option's value as --config reads it back (lists, as --metrics holds them, joined by commas or 'none')."""
    if isinstance(value, (list, tuple)):
        return ','.join(str(v) for v in value) or 'none'
    return value


def resolved_options(method, config, common, given, command, methods):
    """{option name: value} of a configured run: `config` and `common` from method.configure, `given` the options as
    parsed (after --config) for AS_GIVEN."""
    fields = method.fields()
    values = {}
    for name in option_names(method, command, methods):
        if name in fields:
            value = getattr(config, name) if common.get(name) not in (None, False) else common.get(name)
        elif name in AS_GIVEN:
            value = given.get(name)
        else:
            value = common.get(name, given.get(name))
        values[name] = yaml_value(value)
    values['generator'], values['method'] = method.family, method.name
    return values


def flags_left_out(given, explicit):
    """The command-line flags of a run (`given` its options, `explicit` the names given) that a file cannot hold
    (FLAGS_ONLY, beyond those of the saving itself), as typed again: ['--trust-pickle', '--sr-module=X']."""
    names = [name for name in FLAGS_ONLY if name in explicit and name not in ABOUT_SAVING and given.get(name)]
    return [flag_name(name) + ('' if given[name] is True else f'={shlex.quote(str(given[name]))}') for name in names]


def save(path, values, method, force=False, dry_run=False, flags=()):
    """Write `values` to the YAML file `path` atomically (a dry run prints it instead), naming `flags` (flags_left_out)
    in its header; RunError (one line) when it exists and force is off."""
    import yaml  # pylint: disable=import-outside-toplevel
    if os.path.isdir(path):
        raise RunError(f'--save-config: {path} is a folder; name a .yaml file')
    if os.path.exists(path) and not force:
        raise RunError(f'--save-config: {path} exists; pass --force to overwrite it')
    header = (f'# train.py options of --generator={method.family} --method={method.name}, resolved: a recipe\'s, the '
        'embedded demo\'s\n# and the preset\'s values filled in; null leaves an option unset. Run them with\n'
        f'#   python train.py --config {path}{"".join(" " + flag for flag in flags)}\n# (flags given with it override '
        'the file' + ('; a file cannot set ' + ', '.join(f.split('=')[0] for f in flags) if flags else '') + ').\n')
    defaults = {f.name: f.default for f in method.config.flags()}
    lines = []
    for name, value in values.items():
        line = yaml.safe_dump({name: value}, default_flow_style=False, allow_unicode=True, width=10**6).rstrip('\n')
        unset = value is None or (value is False and name in defaults)
        lines.append(line + (f'  # default: {defaults[name]}' if unset and defaults.get(name) is not None else ''))
    text = header + '\n'.join(lines) + '\n'
    if dry_run:
        print(text + f'Dry run; {path} not written.')
        return
    try:
        with dnnlib.util.atomic_write(path, 'w', encoding='utf-8') as f:
            f.write(text)
    except OSError as err:
        raise RunError(f'--save-config: cannot write {path} ({err.strerror or err})') from None

#----------------------------------------------------------------------------
