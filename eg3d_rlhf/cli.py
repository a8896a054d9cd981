"""Click helpers shared by the command-line tools: seed lists, devices, generator loading (trusted pickles or data)."""

import contextlib
import dataclasses
import itertools
import json
import math
import os
import shutil
import warnings

import click
import torch

import dnnlib
from eg3d_rlhf.data.bank import Bank, BankError, bank_holding
from eg3d_rlhf.generators import registry
from eg3d_rlhf.generators.base import MAX_SEED, sample_keys, seed_ranges
from eg3d_rlhf.geometry import convention as conventions
from torch_utils import report_to

#----------------------------------------------------------------------------

class FiniteRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (a nan --kimg never ends; a nan weight poisons every step)."""
    name = 'finite float'

    def _describe_range(self):
        return super()._describe_range() if (self.min, self.max) != (None, None) else ''

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f'{value!r} is not a finite number', param, ctx)
        return rv

class FiniteList(click.ParamType):
    """Comma-separated numbers, each a FiniteRange(**range_kwargs): '0.02,0.05' -> [0.02, 0.05]."""
    name = 'list'

    def __init__(self, **range_kwargs):
        self.item = FiniteRange(**range_kwargs)

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        items = [x.strip() for x in str(value).split(',')]
        if '' in items:
            self.fail(f'{value!r}: give comma-separated numbers, e.g. 0.02,0.05', param, ctx)
        return [self.item.convert(x, param, ctx) for x in items]

FINITE = FiniteRange()          # Any finite float.
SEED = click.IntRange(min=0, max=MAX_SEED)      # A random seed numpy's RandomState takes.

class Writable(click.ParamType):
    """An output path (kind 'dir' or 'file') checked when the command line is read: no long run dies at its end
    because its result could not be written."""
    name = 'path'

    def __init__(self, kind):
        self.kind = kind

    def convert(self, value, param, ctx):
        problem = dnnlib.util.writable_problem(value, self.kind)
        if problem is not None:
            self.fail(f'{problem}; choose another', param, ctx)
        return value

OUT_DIR, OUT_FILE = Writable('dir'), Writable('file')

def family_options(command):
    """--family-seed, --build-spread and --family-heads of a click command: the generator's training heads
    (synthetic.family.Family) that simulated raters hold samples against; by default the bundled flow model's."""
    from eg3d_rlhf.generators.flow_heads import PRESETS  # pylint: disable=import-outside-toplevel
    bundled = PRESETS['default']
    for option in reversed([
            click.option('--family-seed', type=click.IntRange(min=0), default=bundled['data_seed'], show_default=True,
                help='Dataset seed of the generator\'s training heads (a flow config\'s data_seed)'),
            click.option('--build-spread', type=FiniteRange(0, 1, max_open=True), default=bundled['build_spread'],
                show_default=True, help='Their builds (a flow config\'s build_spread)'),
            click.option('--family-heads', type=click.IntRange(min=2), default=64, show_default=True,
                help='Training heads the ratings are held against (drawn once per slab grid, kept in the cache dir)')]):
        command = option(command)
    return command


def check_input(path, flag):
    """A one-line usage error naming `flag` unless `path` is a regular file (dnnlib.util.file_problem: a FIFO or a
    device would block its reader forever); for inputs read late, so a run does not stop at its end because of one."""
    problem = None if path is None else dnnlib.util.file_problem(path)
    if problem is not None:
        raise click.BadParameter(problem, param_hint=flag)

def parse_range(s):
    """'0,2,5-7' -> [0, 2, 5, 6, 7]; click.BadParameter when it cannot be read."""
    if isinstance(s, list):
        return s
    try:
        return seed_ranges(s)
    except ValueError as err:
        raise click.BadParameter(str(err))

conditions_option = click.option('--conditions', type=parse_range, metavar='LIST',
    help='Conditions of a conditional (flow) generator, e.g. 0-3  [default: all of them]')

mesh_convention_option = click.option('--mesh-convention', type=click.Choice(conventions.CONVENTIONS), default='ours',
    show_default=True, help=conventions.HELP)

device_option = click.option('--device', 'device_name', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto',
    show_default=True, help='Where the networks run')

def pick_device(name):
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        raise click.BadParameter('CUDA is not available on this machine', param_hint='--device')
    return torch.device(name)

report_option = click.option('--report-to', type=click.Choice(report_to.CHOICES), help=report_to.HELP)

def pick_reporter(name):
    """--report-to's reporter (None = tensorboard where installed, else none); a one-line click error when its
    library is missing. Call it before any long work."""
    try:
        return report_to.resolve(name)
    except report_to.ReportError as err:
        raise click.ClickException(str(err))

def open_reporter(run_dir, reporter, **labels):
    """--report-to's writer for run_dir (torch_utils/report_to.py; labels: a W&B run's name and config); a one-line
    click error when it cannot start."""
    try:
        with dnnlib.util.writing(run_dir, *([] if run_dir is None else [os.path.dirname(run_dir)])):
            return report_to.open_writer(run_dir, pick_reporter(reporter), **labels)
    except report_to.ReportError as err:
        raise click.ClickException(str(err))

def require_trust(network_pkl, trust_pickle):
    if not trust_pickle:
        raise click.ClickException(f'refusing to load {network_pkl}: loading a pickle runs code stored in it; '
            'pass --trust-pickle if you trust this file')

# The bundled generators (checkpoints/README.md says how they were made), named by their families in the registry.
# They ship with this repository, so they load with the same trust as the code next to it.
BUNDLED = registry.bundled_file('bundled')
BUNDLED_FLOW = registry.bundled_file('bundled-flow')

def network_help():
    """--network's help: each registered family's files and the bundled names."""
    families, root = registry.FAMILIES.values(), os.path.dirname(registry.CHECKPOINTS)
    kinds = [f'{f.description} ({"needs --trust-pickle" if f.needs_trust else "read as data"})' for f in families]
    names = [f'{name} = {os.path.relpath(path, root)}' for f in families for name, path in f.bundled.items()]
    return 'Generator: ' + ', '.join(kinds + names)

NETWORK_HELP = network_help()

def network_family(path):
    """The registry's family of a generator file, or a one-line click error naming the file."""
    try:
        return registry.family_of_file(path)
    except ValueError as err:
        raise click.ClickException(str(err))

def require_capability(path, capability, param='--network'):
    """The family of a generator file when it has the capability (registry.CAPABILITIES), else a one-line click error
    naming the file and the files that have it."""
    family = network_family(path)
    if capability not in family.capabilities:
        raise click.ClickException(f'{param}: {path} is not {registry.either(registry.with_capability(capability))} '
            f'({family.title} generators have no {capability})')
    return family

def network_path(network, trust_pickle, capability=None):
    """The file a --network value names, read once (dnnlib.util.frozen_file): bundled names ('bundled', 'bundled-flow')
    are the shipped generators, a file of a family that reads it as data needs nothing, any other (a pickle) needs
    --trust-pickle. With a capability, a file whose family lacks it is refused first (require_capability), before trust
    is asked for. load_generator and network_keys read the bytes checked here, never the path again: a file changed
    after the check cannot be loaded as something more trusted than what was checked."""
    named = registry.bundled_file(network)
    path = read_network(named or network, missing=f'the {network} generator {named} is missing; restore it from git'
        if named is not None else f'{network}: no such network file')
    family = network_family(path) if capability is None else require_capability(path, capability)
    if family.needs_trust and not registry.is_bundled(path):
        require_trust(path, trust_pickle)
    return path

def read_network(path, missing=None):
    """The generator file at `path` read once (a FrozenFile: what every later step reads), or a one-line click error
    (`missing` when there is no such file)."""
    try:
        return dnnlib.util.frozen_file(path)
    except FileNotFoundError:
        raise click.ClickException(missing or f'{path}: no such network file') from None
    except OSError as err:
        raise click.ClickException(str(err) if isinstance(err, dnnlib.util.NotRegularFile) else
            f'{path}: cannot read it ({err.strerror or err})') from None

def open_bank(path, check_slabs=True):
    """The bank at `path` with every slab file checked whole (Bank.check_slabs: before any work, not after it), or a
    one-line click error saying why it cannot be read."""
    try:
        bank = Bank(path)
        if check_slabs:
            bank.check_slabs()
        return bank
    except BankError as err:
        raise click.ClickException(str(err))

@contextlib.contextmanager
def one_line_errors(*kinds):
    """Exceptions of `kinds` raised in the block (their messages name the file) become one-line click errors."""
    try:
        yield
    except kinds as err:
        raise click.ClickException(str(err))

def open_reward(path, device, trust_pickle=False):
    """The reward checkpoint (or published bundle: zip or folder) at `path` on `device`, or a one-line click error
    naming --reward-model; trust_pickle lets a bundle's best_model.pt hold pickled objects."""
    from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, load_reward # pylint: disable=import-outside-toplevel
    try:
        return load_reward(path, device, trust_pickle=trust_pickle)
    except RewardCheckpointError as err:
        raise click.ClickException(f'--reward-model: {err}')

def check_bank_grid(bank, reward, reward_path):
    """A one-line click error unless the bank's slabs lie on the grid of the reward's input spec (resolution, crop and
    cube length: scores.check_grid), for every tool that scores a bank with a reward."""
    from eg3d_rlhf.data import scores # pylint: disable=import-outside-toplevel
    try:
        scores.check_grid(reward, bank, reward_path, bank.root)
    except (scores.ScoresError, BankError) as err:
        raise click.ClickException(str(err))

def bank_scores(bank, reward, batch=8, progress=None, members=False, ids=None):
    """scores.score_bank: {id: reward} of every sample of the bank (or of `ids`), or a one-line click error naming the
    slab that cannot be read or the sample whose score is not finite (rewards.contract.ScoreError, with its cause)."""
    from eg3d_rlhf.data import scores # pylint: disable=import-outside-toplevel
    from eg3d_rlhf.rewards.contract import ScoreError # pylint: disable=import-outside-toplevel
    with one_line_errors(BankError, ScoreError):
        return scores.score_bank(reward, bank, batch=batch, progress=progress, members=members, ids=ids)

force_option = click.option('--force', is_flag=True,
    help='Replace output files that already exist (they may hold work that cannot be redone, e.g. people\'s labels)')

def refuse_overwrite(*paths, force=False, inputs=None):
    """A one-line click error naming the first of `paths` (None skipped) that exists, unless force; called before any
    long work starts. `inputs` ({flag: path}) are what the same command reads: a path that would write over one of
    them (the file, a link to it, or an existing file inside an input folder such as a bank) is refused, force or not."""
    for path in paths:
        for flag, source in (inputs or {}).items():
            if writes_over(path, source):
                raise click.ClickException(f'{path} would write over {flag} {source}, which this command reads '
                    '(--force does not change that); choose another name')
    for path in paths:
        if not force and path is not None and os.path.lexists(path):
            raise click.ClickException(f'{path} exists; pass --force to replace it, or choose another name')

@contextlib.contextmanager
def all_or_nothing(*paths, keep=None):
    """A command's outputs (files or folders; None skipped), written in the block: when it fails (a full disk, a
    diverged fit), those of `paths` that did not exist when it began are removed, so no partial result is left (unless
    keep() says what was written by then is worth keeping, e.g. a training run's snapshots); a full disk or a folder
    that cannot be written (dnnlib.util.RESOURCE_ERRORS) under them stops in one line naming the file
    (dnnlib.util.WriteError)."""
    paths = [os.path.abspath(p) for p in paths if p is not None]
    fresh = [p for p in paths if not os.path.lexists(p)]
    try:
        yield
    except BaseException as err:
        for path in fresh if keep is None or not keep() else []:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                with contextlib.suppress(OSError):
                    os.remove(path)
        where = _output_of(err, paths)
        if where is not None:
            raise dnnlib.util.WriteError(where, err) from None
        raise

def holds(folder, prefix):
    """Whether the folder `folder` exists and holds an entry whose name starts with `prefix` (all_or_nothing's keep:
    a training run that failed after its first snapshot keeps its folder, to resume from)."""
    return os.path.isdir(folder) and any(name.startswith(prefix) for name in os.listdir(folder))

def _output_of(err, paths):
    """The file a resource error (dnnlib.util.RESOURCE_ERRORS) of writing under `paths` names (the first of `paths`
    for a file object's error, which names none); None for any other error."""
    if not isinstance(err, OSError) or isinstance(err, dnnlib.util.WriteError) or not paths:
        return None
    if err.errno not in dnnlib.util.RESOURCE_ERRORS:
        return None
    if err.filename is None:
        return paths[0]
    name = os.path.abspath(os.fsdecode(err.filename))
    inside = any(name == p or name.startswith(p + os.sep) for p in paths)
    return name if inside else None

def outermost_new_folder(path):
    """The outermost folder of `path`'s that does not exist yet (made for `path`, so all_or_nothing removes it too);
    None when its folder exists."""
    folder, new = os.path.dirname(os.path.abspath(path)), None
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder, new = os.path.dirname(folder), folder
    return new

def writes_over(path, source):
    """Would writing `path` replace `source` (the same file, or an existing file inside the folder `source`)?"""
    if path is None or source is None or not os.path.exists(path) or not os.path.exists(source):
        return False
    inside = os.path.commonpath([os.path.realpath(path), os.path.realpath(source)]) == os.path.realpath(source)
    return os.path.samefile(path, source) or (os.path.isdir(source) and inside)

def refuse_outdir(outdir, force=False, resume=None, flag='--outdir'):
    """A one-line click error, before any work, when the folder a tool fills lies inside a sample bank (its files would
    be rewritten in place: never, --force or not), or already holds files (unless force, or unless `resume` is a
    snapshot inside it: its run continues there). Returns whether it continues that run."""
    bank = bank_holding(outdir)
    if bank is not None:
        raise click.ClickException(f'{flag} {outdir} lies inside the sample bank {bank}; writing there would damage '
            'the bank (--force does not change that); choose a folder outside it')
    continues = resume is not None and os.path.realpath(os.path.dirname(resume)) == os.path.realpath(outdir)
    if not (force or continues) and os.path.isdir(outdir) and os.listdir(outdir):
        raise click.ClickException(f'{outdir} holds files already; pass --force to write over them, or choose another '
            'folder')
    return continues

def side_path(path, suffix):
    """'out/reward.pt', '.report.json' -> 'out/reward.report.json'."""
    return os.path.splitext(path)[0] + suffix

def parse_model_config(ctx, param, value):
    """--model-config: a JSON object of a reward model's constructor arguments (reference_shape is set by centring)."""
    try:
        config = json.loads(value)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f'not JSON ({err.msg})')
    if not isinstance(config, dict) or 'reference_shape' in config:
        raise click.BadParameter('expected a JSON object of constructor arguments (reference_shape is set by --centre)')
    return config

def ffhq512_spec_path():
    """Where eg3d_reference/ffhq512_param_spec.json is looked for: in $EG3D_RLHF_SHARED, else ../shared."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shared = os.environ.get('EG3D_RLHF_SHARED', os.path.join(os.path.dirname(repo), 'shared'))
    return os.path.join(shared, 'eg3d_reference', 'ffhq512_param_spec.json')

def ffhq512_structure(channel_base=None, channel_max=None):
    """EG3D's FFHQ-512 TriPlaneGenerator with random weights (torch seed 0) for benchmarks: the G_init_kwargs of
    eg3d_reference/ffhq512_param_spec.json in $EG3D_RLHF_SHARED, else ../shared beside the repository; channel_base and
    channel_max shrink backbone and super-resolution alike. A one-line click error when the spec is missing."""
    from training.triplane import TriPlaneGenerator # pylint: disable=import-outside-toplevel
    spec = ffhq512_spec_path()
    if not os.path.isfile(spec):
        raise click.ClickException(f'{spec} not found: set EG3D_RLHF_SHARED to the folder holding eg3d_reference/')
    with open(spec, encoding='utf-8') as f:
        kwargs = json.load(f)['ffhq512']['G_init_kwargs']
    if channel_base is not None:
        kwargs.update(channel_base=channel_base, channel_max=channel_max)
        kwargs['sr_kwargs'].update(channel_base=channel_base, channel_max=channel_max)
    torch.manual_seed(0)
    return TriPlaneGenerator(**kwargs)

def load_generator(path, device, batch=8, draw_batch=1, invariant=False, **eg3d_kwargs):
    """The generator of a network file (network_path's answer) on `device`, loaded by its registry family with the
    options it takes: batch; draw_batch (ids per pass, flows); invariant (batch-invariant passes, flows); eg3d_kwargs
    truncation_psi, truncation_cutoff, fov_degrees (EG3D; other families have no such settings). A clear one-line
    error if it cannot be read. The file is read once (read_network; network_path's answer is read already),
    recognised and loaded from those bytes."""
    path = read_network(path)
    family = network_family(path)
    if draw_batch != 1 and 'draw_batch' not in family.options:
        takers = [f for f in registry.FAMILIES.values() if 'draw_batch' in f.options]
        raise click.UsageError(f'--draw-batch is for {" and ".join(f.files for f in takers)}; '
            f'{path} is {family.description}')
    options = dict(eg3d_kwargs, batch=batch, draw_batch=draw_batch, invariant=invariant)
    try:
        return family.load(path, device, **{k: v for k, v in options.items() if k in family.options})
    except (OSError, ValueError, KeyError) as err:
        message = str(err) if str(err).startswith(path) else f'{path}: {err}'
        raise click.ClickException(message)

def draw_slabs(path, keys, grid, device, batch=8, draw_batch=1):
    """Raw slabs [len(keys), *grid.shape] of a network file's samples [(seed, condition)], in the order of keys."""
    G = load_generator(path, device, batch=batch, draw_batch=draw_batch)
    runs = itertools.groupby(keys, lambda key: key[1])
    return torch.cat([G.sigma_grid([seed for seed, _ in run], grid, condition) for condition, run in runs])

def network_keys(path, seeds, conditions):
    """[(seed, condition)] of the seeds and --conditions for the generator in a network file, its conditions read by
    its family without running code (a flow checkpoint's config says them; pickles are unconditional); click errors."""
    path = read_network(path)
    family = network_family(path)
    try:
        return sample_keys(seeds, conditions, family.conditions(path), family.title)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--conditions')

#----------------------------------------------------------------------------

#----------------------------------------------------------------------------

REGIONS_HELP = ("template: the synthetic world's parts of its average head (demo generators); published: the "
    "study's fixed boxes for EG3D-FFHQ slabs; landmarks: boxes around --landmarks; or a .npy label volume of the "
    "reward's slab with --region-names")

def load_regions(source, grid, names_path=None, landmarks_path=None, margin=0.02):
    """The analysis.regions.Regions a --regions value names over `grid` (template, published, landmarks with a .npy
    [L, 3] of world points in WFLW-98 order, or a .npy label volume with a JSON list of names); click errors."""
    from eg3d_rlhf.analysis import regions # pylint: disable=import-outside-toplevel
    from eg3d_rlhf.synthetic import heads # pylint: disable=import-outside-toplevel
    try:
        if source == 'template':
            labels, names = heads.part_labels(grid)
            return regions.Regions(labels, names + [regions.OTHER], 'synthetic template')
        if source == 'published':
            return regions.published(grid.shape)
        if source == 'landmarks':
            if landmarks_path is None:
                raise ValueError('--regions=landmarks needs --landmarks')
            try:
                points = dnnlib.util.read_npy(landmarks_path)
            except (dnnlib.util.NotRegularFile, dnnlib.util.BadFile) as err:
                raise ValueError(str(err)) from None
            except (OSError, ValueError) as err:
                raise ValueError(f'{landmarks_path}: cannot read a .npy of 3-D landmarks ({err})')
            try:
                return regions.from_landmarks(points, grid, margin=margin)
            except ValueError as err:
                raise ValueError(f'{landmarks_path}: {err}')
        if names_path is None:
            raise ValueError(f'{source}: a label volume needs its names (--region-names, a JSON list) too')
        return regions.load(source, names_path, grid.shape)
    except ValueError as err:
        raise click.ClickException(f'--regions: {err}')

#----------------------------------------------------------------------------
# Flags derived from a config dataclass whose fields carry their help and limits as metadata (rewards.fitting.setting):
# the field states its default and help once; its flag is its name with dashes.

def field_option(cls, name):
    """The click option of one field of a config dataclass: --name (--name/--no-name for a bool), its default and help
    from the field, its type from the field's type and metadata (min, min_open, max, choices; a tuple is a FiniteList;
    default_shown: what --help shows for a default of None, which a bool flag gives when neither form is passed)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    meta, flag, default = field.metadata, '--' + name.replace('_', '-'), field.default
    limits = {k: meta[k] for k in ('min', 'max', 'min_open') if k in meta}
    if field.type is bool:
        shown = meta.get('default_shown', True) if default is None else True
        return click.option(f'{flag}/--no-{flag[2:]}', default=default, show_default=shown, help=meta['help'])
    if 'choices' in meta:
        kind = click.Choice(list(meta['choices']))
    elif field.type is tuple:
        kind, default = FiniteList(**limits), ','.join(f'{v:g}' for v in default)
    else:
        kind = {int: click.IntRange, float: FiniteRange}[field.type](**limits)
    return click.option(flag, type=kind, default=default, show_default=True, help=meta['help'])

def fit_options(*names):
    """A decorator adding the flags of these FitOptions fields, in this order."""
    from eg3d_rlhf.rewards.fitting import FitOptions # pylint: disable=import-outside-toplevel
    def decorate(func):
        for name in reversed(names):
            func = field_option(FitOptions, name)(func)
        return func
    return decorate

#----------------------------------------------------------------------------

@contextlib.contextmanager
def warning_lines(category=Warning):
    """Warnings of `category` raised in the block (e.g. a label file's tolerated leftovers) printed to stderr as one
    'warning: ...' line each, whatever else the block raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', category)
        try:
            yield
        finally:
            for w in caught:
                click.echo(f'warning: {w.message}', err=True)
