"""Train an EG3D tri-plane GAN (EG3D's train.py options; presets ffhq, afhq, shapenet and the CPU-sized synthetic)."""

import contextlib
import dataclasses
import json
import os
import re
import sys

import click
from click.core import ParameterSource
import torch

import dnnlib
from eg3d_rlhf import cli
from eg3d_rlhf.analysis import image_metrics
from eg3d_rlhf.analysis import training_metrics
from eg3d_rlhf.finetune import circular_config
from eg3d_rlhf.finetune import circular_run
from eg3d_rlhf.finetune import config as reward_options
from eg3d_rlhf.finetune import panel
from eg3d_rlhf.finetune import recipes
from eg3d_rlhf.generators.base import file_sha256, seed_ranges
from eg3d_rlhf.generators import flow_heads
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, load_reward
from eg3d_rlhf.synthetic import demo
from training import distributed
from training import legacy
from training import presets
from training.dataset import DatasetError
from training import training_loop

#----------------------------------------------------------------------------

class _Tee:
    """Copy everything written to a stream into an open log file as well."""

    def __init__(self, stream, file):
        self.stream = stream
        self.file = file

    def write(self, text):
        self.stream.write(text)
        self.file.write(text)
        self.file.flush()

    def flush(self):
        self.stream.flush()
        self.file.flush()


@contextlib.contextmanager
def log_to(path):
    """Append stdout and stderr to `path` (log.txt) inside the block."""
    with open(path, 'a') as f:
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, f), _Tee(sys.stderr, f)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved

#----------------------------------------------------------------------------
# Processes.

def run_process(rank, c):
    """One training process (rank `rank`); rank 0 also writes log.txt."""
    logging = log_to(os.path.join(c.run_dir, 'log.txt')) if rank == 0 else contextlib.nullcontext()
    with logging:
        training_loop.training_loop(rank=rank, local_rank=rank, **c)


def next_run_dir(outdir, desc):
    """outdir/NNNNN-desc with NNNNN one above the highest existing run number."""
    prev_ids = []
    if os.path.isdir(outdir):
        prev_ids = [re.match(r'^\d+', x) for x in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, x))]
    cur_id = max((int(m.group()) for m in prev_ids if m is not None), default=-1) + 1
    return os.path.join(outdir, f'{cur_id:05d}-{desc}')


def print_options(c):
    print()
    print('Training options:')
    print(json.dumps(c, indent=2))
    print()
    print(f'Output directory:    {c.run_dir}')
    print(f'Device:              {c.device}')
    print(f'Number of processes: {c.num_gpus}')
    print(f'Batch size:          {c.batch_size} images')
    print(f'Training duration:   {c.total_kimg} kimg')
    print(f'Dataset path:        {c.training_set_kwargs.path}')
    print(f'Dataset size:        {c.training_set_kwargs.max_size} images')
    print(f'Dataset resolution:  {c.training_set_kwargs.resolution}')
    print(f'Dataset labels:      {c.training_set_kwargs.use_labels}')
    print(f'Dataset x-flips:     {c.training_set_kwargs.xflip}')
    print()


def create_run_dir(c):
    print('Creating output directory...')
    os.makedirs(c.run_dir)
    with open(os.path.join(c.run_dir, 'training_options.json'), 'wt') as f:
        json.dump(c, f, indent=2)


def launch_training(c, desc, outdir, dry_run):
    """Pick the run directory, print the options, then train: in this process, in spawned processes (--gpus N),
    or as one of torchrun's processes (env://; --gpus must then equal WORLD_SIZE)."""
    launched = distributed.torchrun_env()
    if launched is not None:
        _rank, _local_rank, world_size = launched
        if world_size != c.num_gpus:
            raise click.ClickException(f'--gpus={c.num_gpus}, but torchrun started {world_size} processes; they must match')
        if dry_run:
            raise click.ClickException('--dry-run: run it without torchrun')
        rank, local_rank, _world_size = distributed.init_torchrun(c.device)
        run_dir = [None]
        if rank == 0:
            c.run_dir = next_run_dir(outdir, desc)
            print_options(c)
            create_run_dir(c)
            run_dir = [c.run_dir]
        torch.distributed.broadcast_object_list(run_dir, src=0)
        c.run_dir = run_dir[0]
        with distributed.process_group_session():
            if rank == 0:
                with log_to(os.path.join(c.run_dir, 'log.txt')):
                    training_loop.training_loop(rank=rank, local_rank=local_rank, **c)
            else:
                training_loop.training_loop(rank=rank, local_rank=local_rank, **c)
        return

    problem = cli.writable_problem(outdir, 'dir')                       # The demo's default --outdir included.
    if problem is not None:
        raise click.ClickException(f'--outdir: {problem}; choose another')
    c.run_dir = next_run_dir(outdir, desc)
    assert not os.path.exists(c.run_dir)
    print_options(c)
    if dry_run:
        print('Dry run; exiting.')
        return
    create_run_dir(c)
    print('Launching processes...')
    try:
        distributed.spawn(run_process, num_processes=c.num_gpus, device_type=c.device, args=(c,))
    except (training_loop.TrainingStopped, training_loop.ResumeError) as err:
        raise click.ClickException(str(err))

#----------------------------------------------------------------------------
# Resume, checked before anything is written: the pickle loads, its networks are the ones the options build (a changed
# --map-depth would otherwise leave layers at random), and a reward run's snapshot keeps its evidence's anchor.

def check_resume(c):
    """Check c.resume_pkl against the options and fill in c.resume_kimg (the snapshot's own kimg unless given);
    one-line click errors naming the file and the fix."""
    if c.get('resume_pkl') is None:
        return
    try:
        data = legacy.load_network_pkl(c.resume_pkl, trust=c.trust_resume_pkl)
    except (OSError, ValueError) as err:
        raise click.ClickException(f'--resume: {err}')
    unrendered_demo = c.training_set_kwargs.path == demo.dataset_path() and demo.dataset_problem() is not None
    if not unrendered_demo:                                         # (Only in a dry run: a real run renders it first.)
        training_set = dnnlib.util.construct_class_by_name(**c.training_set_kwargs)
        networks = dict(zip(['G', 'D', 'G_ema'], training_loop.build_networks(training_set, c.G_kwargs, c.D_kwargs, 'cpu')))
        problem = training_loop.architecture_mismatch(data, networks)
        if problem is not None:
            raise click.ClickException(f'--resume: {c.resume_pkl}: {problem}; pass the options it was trained with '
                '(--cfg, --map-depth, ...)')
    anchor = data.get('reward_anchor')
    if anchor is not None and anchor.get('panel') is not None and c.get('panel_kwargs') is not None:
        problem = panel.state_mismatch(anchor['panel'], file_sha256(c.panel_kwargs.reward_model_path),
            seed_ranges(c.panel_kwargs.seeds))
        if problem is not None:
            raise click.ClickException(f'--resume: {c.resume_pkl}: {problem}')
    if c.resume_kimg is None:
        c.resume_kimg = float((data.get('progress') or {}).get('kimg', 0))

#----------------------------------------------------------------------------

def init_dataset_kwargs(data):
    """Dataset constructor kwargs with explicit resolution, labels and size (read from the data), and its name."""
    try:
        dataset_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True, max_size=None, xflip=False)
        dataset = dnnlib.util.construct_class_by_name(**dataset_kwargs)    # Every image's header checked here.
        dataset.check_camera_labels()
        dataset_kwargs.resolution = dataset.resolution
        dataset_kwargs.use_labels = dataset.has_labels
        dataset_kwargs.max_size = len(dataset)
        return dataset_kwargs, dataset.name
    except (IOError, DatasetError) as err:
        raise click.ClickException(f'--data: {err}')


def parse_comma_separated_list(s):
    if isinstance(s, list):
        return s
    if s is None or s.lower() == 'none' or s == '':
        return []
    return s.split(',')


def pick_device(name, gpus):
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device=cuda: CUDA is not available on this machine')
    if name == 'cuda' and distributed.torchrun_env() is None and gpus > torch.cuda.device_count():
        raise click.ClickException(f'--gpus={gpus}, but this machine has {torch.cuda.device_count()} CUDA devices')
    return name


def with_demo_defaults(kwargs, explicit):
    """kwargs with the embedded demo's values for every option not given (explicit), when --reward is set and none
    of --cfg, --data, --gpus, --batch, --gamma is given; otherwise kwargs, after checking the required options."""
    missing = [k for k in ('outdir', *demo.REQUIRED) if kwargs.get(k) is None]
    if kwargs.get('reward') in (None, 'none') or any(kwargs.get(k) is not None for k in demo.REQUIRED):
        if missing:
            hint = ' (or, with --reward, none of --cfg, --data, --gpus, --batch, --gamma: the bundled demo)'
            raise click.UsageError(f"Missing option '--{missing[0]}'{hint}")
        return dict(kwargs)
    kwargs = dict(kwargs)
    for key, value in demo.OPTIONS.items():
        if key not in explicit:
            kwargs[key] = value
    if kwargs['resume'] == demo.GENERATOR:
        kwargs['trust_pickle'] = True       # Bundled with the code, so trusted like it (eg3d_rlhf/cli.BUNDLED is the same file).
    kwargs['data'] = demo.dataset_path()    # Rendered into the cache by make_config, once the options are checked.
    return kwargs

#----------------------------------------------------------------------------
# Reward fine-tuning: the flags come from eg3d_rlhf.finetune.config.RewardFinetuneConfig, which holds every default,
# range and help text; training/ builds the phase and the panel by class name from the options set here.

def checked_reward_options(options):
    """RewardFinetuneConfig of the reward options in `options` (click's parameters); a one-line usage error naming the
    flag when a value or combination cannot train."""
    try:
        return reward_options.from_options(options)
    except reward_options.ConfigError as err:
        raise click.UsageError(str(err))


def reward_config(opts):
    """The checked RewardFinetuneConfig of the reward flags and the demo's overrides, its reward model resolved to an
    absolute path of the right kind; one-line click errors otherwise."""
    cfg = checked_reward_options(opts)
    if not cfg.enabled:
        return cfg
    if opts.resume is None:
        raise click.UsageError('--reward fine-tunes a trained generator: pass --resume (and --trust-pickle)')
    path = os.path.abspath(cfg.reward_model or demo.reward_model(cfg.reward))
    try:
        kind = load_reward(path).kind
    except RewardCheckpointError as err:
        raise click.ClickException(f'--reward-model: {err}')
    if kind != cfg.reward:
        raise click.ClickException(f'--reward-model: {path} is a {kind} reward, but --reward={cfg.reward}')
    return dataclasses.replace(cfg, reward_model=path)


def add_reward_phase(c, cfg):
    """The 'Greward' phase (loss_kwargs.reward_kwargs, reward_interval) and the reward panel (panel_kwargs)."""
    if not cfg.enabled:
        return
    c.loss_kwargs.reward_kwargs = dnnlib.EasyDict(class_name='eg3d_rlhf.finetune.RewardPhase', **cfg.phase_options())
    c.reward_interval = cfg.reward_every
    if cfg.reward_optimizer == 'own':
        c.reward_opt_kwargs = dnnlib.EasyDict(c.G_opt_kwargs)            # Adam at --glr, not rescaled for lazy reg.
    if cfg.has_panel:
        c.panel_kwargs = dnnlib.EasyDict(class_name='eg3d_rlhf.finetune.panel.RewardPanel',
            reward_model_path=cfg.reward_model, seeds=cfg.panel_seeds, truncation_psi=cfg.panel_psi)


def add_shape_prior(c, opts):
    """--shape-prior-steps: fit a new G's density to synthetic heads before training (eg3d_rlhf.synthetic.shape_prior)."""
    if opts.shape_prior_steps > 0:
        c.shape_prior_kwargs = dnnlib.EasyDict(func_name='eg3d_rlhf.synthetic.shape_prior.fit_shape_prior',
            steps=opts.shape_prior_steps)


#----------------------------------------------------------------------------
# Training-time metrics (eg3d_rlhf.analysis.training_metrics, EG3D's names), checked with the other arguments: names
# known, a local feature network given, trusted and loadable. training/ builds them by class name.

def metrics_options(opts, explicit, trusted):
    """The metrics' constructor kwargs, or None for --metrics=none; one-line usage errors (exit 2) for unknown names, a
    missing or untrusted --inception, or --metrics-ticks without metrics. `trusted`: --trust-pickle as the user gave it."""
    if not opts.metrics:
        for key in ('metrics_ticks', 'inception'):
            if key in explicit and opts.get(key) is not None:
                raise click.UsageError(f'--{key.replace("_", "-")} is for --metrics; give the metrics to compute')
        return None
    try:
        names = [spec.name for spec in training_metrics.parse_metrics(opts.metrics)]
    except training_metrics.MetricError as err:
        raise click.UsageError(f'--metrics: {err}')
    if opts.inception is None:
        raise click.UsageError(f'--metrics={",".join(names)} needs --inception PATH: a local feature network (NVIDIA\'s '
            'inception-2015-12-05.pkl, or a torch.export / TorchScript archive) with --trust-pickle; nothing is downloaded'
            + (' (--metrics=none turns the recipe\'s off)' if opts.get('recipe', 'none') != 'none' else ''))
    if not os.path.isfile(opts.inception):
        raise click.UsageError(f'--inception: {opts.inception} does not exist (it is never downloaded)')
    try:
        image_metrics.load_inception(opts.inception, trust_pickle=trusted)      # Loads now, before anything is written.
    except image_metrics.InceptionError as err:
        raise click.UsageError(f'--inception: {err}')
    except Exception as err:                                                    # Any unpickling error, in one line.
        raise click.UsageError(f'--inception: {opts.inception} cannot be loaded ({type(err).__name__}: '
            f'{str(err).splitlines()[0] if str(err) else "no details"})')
    return dnnlib.EasyDict(class_name='eg3d_rlhf.analysis.training_metrics.TrainingMetrics', metrics=names,
        inception=os.path.abspath(opts.inception), trust_pickle=True, seed=opts.seed)


def explicit_options(ctx):
    """Names of the options given on the command line (or through the environment), not left at their defaults."""
    return {name for name in ctx.params if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}


def make_config(kwargs, explicit=()):
    """(training options, run description, output folder) from the command line's options (click's parameter dict); `explicit`
    names the options given on the command line (the demo fills in the others)."""
    trusted = bool(kwargs.get('trust_pickle'))      # As given: the demo trusts its bundled generator, not --inception.
    try:
        kwargs = recipes.with_recipe(kwargs, explicit)
    except recipes.RecipeError as err:
        raise click.UsageError(str(err))
    checked_reward_options(kwargs)                  # First: a bad reward flag fails before anything else is looked at.
    opts = dnnlib.EasyDict(with_demo_defaults(kwargs, explicit))
    metrics_kwargs = metrics_options(opts, set(explicit), trusted)
    cfg = reward_config(opts)
    opts = presets.with_preset_defaults(opts)
    opts.device = pick_device(opts.device, opts.gpus)
    if opts.data == demo.dataset_path() and not opts.dry_run:
        demo.ensure_dataset()
    if opts.dry_run and opts.data == demo.dataset_path() and demo.dataset_problem() is not None:
        # A dry run of the demo before its dataset is cached (or while the cache is damaged): describe the dataset the
        # real run will render.
        training_set_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=opts.data,
            use_labels=True, max_size=demo.DATASET['count'], xflip=False, resolution=demo.DATASET['resolution'])
        dataset_name = os.path.splitext(os.path.basename(opts.data))[0]
    else:
        training_set_kwargs, dataset_name = init_dataset_kwargs(opts.data)
    desc_parts = [f'{cfg.reward}-lambdar{cfg.lambda_r:g}'] if cfg.enabled else []
    try:
        c, desc = presets.build_config(opts, training_set_kwargs, dataset_name, desc_parts=desc_parts)
    except presets.ConfigError as err:
        raise click.ClickException(str(err))
    add_shape_prior(c, opts)
    add_reward_phase(c, cfg)
    if metrics_kwargs is not None:
        c.metrics_kwargs, c.metrics_ticks = metrics_kwargs, opts.get('metrics_ticks') or 1
    return c, desc, opts.outdir

#----------------------------------------------------------------------------
# Circular-DPO (--generator=flow): the flags come from eg3d_rlhf.finetune.circular_config.CircularDPOConfig; a
# flow run shares --outdir, --resume (the flow checkpoint to align), --reward-model, --seed, --device, --desc and
# --dry-run with EG3D's and refuses the EG3D-only options.

FLOW_SHARED = ('generator', 'method', 'outdir', 'resume', 'reward_model', 'seed', 'device', 'desc', 'dry_run')
METHODS = dict(eg3d=('gan',), flow=('circular-dpo',))


def generator_and_method(kwargs):
    """(generator, method) of --generator and --method, each inferred from the other when not given."""
    generator, method = kwargs.get('generator'), kwargs.get('method')
    generator = generator or ('flow' if method == 'circular-dpo' else 'eg3d')
    method = method or METHODS[generator][0]
    if method not in METHODS[generator]:
        raise click.UsageError(f'--method={method} does not apply to --generator={generator}; '
            f'use {" or ".join(METHODS[generator])}')
    return generator, method


def circular_options(kwargs, explicit):
    """The checked CircularDPOConfig of a flow run; a usage error for an EG3D-only option given with it."""
    flow_flags = {f.name for f in circular_config.CircularDPOConfig.flags()}
    foreign = sorted(explicit - flow_flags - set(FLOW_SHARED))
    if foreign:
        raise click.UsageError(f'--{foreign[0].replace("_", "-")} is an EG3D option; --generator=flow takes '
            '--outdir, --resume (a flow checkpoint), --reward-model, --seed, --device, --desc and the Circular-DPO flags')
    try:
        return circular_config.from_options(kwargs)
    except reward_options.ConfigError as err:
        raise click.UsageError(str(err))


def run_circular_dpo(kwargs, explicit):
    """Circular-DPO on a flow checkpoint (--resume, default the bundled one): the embedded demo without --labels."""
    cfg = circular_options(kwargs, explicit)
    network = cli.network_path(kwargs['resume'] or 'bundled-flow', trust_pickle=False)
    if not cli.is_data_checkpoint(network):
        raise click.ClickException(f'--resume: {network} is not a flow checkpoint (tools/train_flow.py writes them)')
    reward_path = os.path.abspath(cfg.reward_model or demo.FLOW_REWARD)
    device = pick_device(kwargs['device'], 1)
    try:
        flow_config = flow_heads.read_flow(network)['config']
    except ValueError as err:
        raise click.ClickException(f'--resume: {err}')
    try:
        reward = load_reward(reward_path, device)
    except RewardCheckpointError as err:
        raise click.ClickException(f'--reward-model: {err}')
    desc = f'flow-circular-dpo-{cfg.ablation}' + ('-demo' if cfg.is_demo else '') + (f'-{kwargs["desc"]}' if kwargs['desc'] else '')
    run_dir = next_run_dir(kwargs['outdir'] or demo.OPTIONS['outdir'], desc)
    options = dict(method='circular-dpo', network=os.path.abspath(network), reward_model=reward_path, seed=kwargs['seed'],
        device=device, run_dir=run_dir, **{k: v for k, v in dataclasses.asdict(cfg).items() if k != 'reward_model'})
    print(json.dumps(options, indent=2))
    if kwargs['dry_run']:
        print('Dry run; exiting.')
        return
    os.makedirs(run_dir)
    with dnnlib.util.atomic_write(os.path.join(run_dir, 'options.json'), 'w') as f:
        json.dump(options, f, indent=2)
    with log_to(os.path.join(run_dir, 'log.txt')):
        generator = cli.load_generator(network, device)
        save = lambda path, pipeline, info: flow_heads.save_flow(path, pipeline, flow_config, training=info)
        try:
            summary = circular_run.run(cfg, generator, reward, run_dir, save, seed=kwargs['seed'], reward_path=reward_path)
        except (OSError, ValueError) as err:
            raise click.ClickException(str(err).splitlines()[0])
        for row in summary['groups'].values():
            if 'win_rate' in row:
                print(f'({row["group"]}) preferred to the base in {row["wins"]} of {row["wins"] + row["losses"]} '
                    f'held-out pairs ({100 * row["win_rate"]:.1f}%, Wilson 95% {100 * row["wilson95"][0]:.1f}-'
                    f'{100 * row["wilson95"][1]:.1f}%, binomial p {row["binomial_p"]:.2g})')
        print(f'{summary["timing"]["total_seconds"]:.0f} s; report: {os.path.join(run_dir, "report.html")}')

#----------------------------------------------------------------------------

POSITIVE = cli.FiniteRange(min=0, min_open=True)

@click.command()

# Required (with --reward, --cfg to --gamma may all be left out: the bundled demo supplies them, eg3d_rlhf/synthetic/demo.py).
@click.option('--outdir',       help='Where to save the results', metavar='DIR',                  type=cli.OUT_DIR)
@click.option('--cfg',          help='Base configuration',                                      type=click.Choice(presets.CONFIGS))
@click.option('--data',         help='Training data', metavar='[ZIP|DIR]',                      type=str)
@click.option('--gpus',         help='Number of GPUs (on CPU: processes) to use', metavar='INT', type=click.IntRange(min=1))
@click.option('--batch',        help='Total batch size', metavar='INT',                         type=click.IntRange(min=1))
@click.option('--gamma',        help='R1 regularization weight', metavar='FLOAT',               type=cli.FiniteRange(min=0))

# Reward fine-tuning (eg3d_rlhf.finetune.config: each flag's default, range and help; all but --reward need --reward).
@reward_options.click_options

# Which generator and method: EG3D's GAN training (with the reward phase under --reward), or Circular-DPO of a flow.
@click.option('--generator',    help='Generator family  [default: flow with --method=circular-dpo, else eg3d]', type=click.Choice(list(METHODS)))
@click.option('--method',       help='gan: EG3D training (--reward adds the reward phase); circular-dpo: preference alignment of a flow  [default: the generator\'s]', type=click.Choice([m for ms in METHODS.values() for m in ms]))

# Circular-DPO (eg3d_rlhf.finetune.circular_config: each flag's default, range and help; --generator=flow only).
@circular_config.click_options

# Optional features.
@click.option('--cond',         help='Train conditional model (must be True)', metavar='BOOL',  type=bool, default=True, show_default=True)
@click.option('--mirror',       help='Enable dataset x-flips', metavar='BOOL',                  type=bool, default=False, show_default=True)
@click.option('--aug',          help='Augmentation mode (only noaug is implemented)',           type=click.Choice(['noaug', 'ada', 'fixed']), default='noaug', show_default=True)
@click.option('--resume',       help='Resume from given network pickle', metavar='[PATH|URL]',  type=str)
@click.option('--resume-kimg',  help='kimg to count from when resuming  [default: the snapshot\'s own, else 0]', metavar='KIMG', type=cli.FiniteRange(min=0))
@click.option('--trust-pickle', help='Confirm you trust the --resume pickle and the --inception file: loading them runs code stored in them', is_flag=True)
@click.option('--shape-prior-steps', help='Fit the new G\'s density to synthetic heads for this many steps first (0 = off)', metavar='INT', type=click.IntRange(min=0), default=0, show_default=True)
@click.option('--freezed',      help='Freeze first layers of D', metavar='INT',                 type=click.IntRange(min=0), default=0, show_default=True)

# Misc hyperparameters.
@click.option('--batch-gpu',    help='Limit batch size per GPU', metavar='INT',                 type=click.IntRange(min=1))
@click.option('--cbase',        help='Capacity multiplier  [default: varies]', metavar='INT',   type=click.IntRange(min=1))
@click.option('--cmax',         help='Max. feature maps  [default: varies]', metavar='INT',     type=click.IntRange(min=1))
@click.option('--glr',          help='G learning rate', metavar='FLOAT',                        type=cli.FiniteRange(min=0), default=0.0025, show_default=True)
@click.option('--dlr',          help='D learning rate', metavar='FLOAT',                        type=cli.FiniteRange(min=0), default=0.002, show_default=True)
@click.option('--map-depth',    help='Mapping network depth', metavar='INT',                    type=click.IntRange(min=1), default=2, show_default=True)
@click.option('--mbstd-group',  help='Minibatch std group size', metavar='INT',                 type=click.IntRange(min=1), default=4, show_default=True)

# Misc settings.
@click.option('--desc',         help='String to include in result dir name', metavar='STR',     type=str)
@click.option('--recipe',       help='A published run\'s settings as defaults, each overridable (paper: README.md, "The published recipe")', type=click.Choice(['none', *recipes.RECIPES]), default='none', show_default=True)
@click.option('--metrics',      help='Quality metrics of G_ema (EG3D\'s names: fid50k_full, kid50k_full, fid1k_partial, ...; need --inception)', metavar='[NAME|A,B,C|none]', type=parse_comma_separated_list, default='none', show_default=True)
@click.option('--metrics-ticks', help='Compute --metrics every N ticks (and at the first and the last)  [default: 1]', metavar='INT', type=click.IntRange(min=1))
@click.option('--inception',    help='Local feature network for --metrics: NVIDIA\'s inception-2015-12-05.pkl or a torch.export / TorchScript archive (each needs --trust-pickle)', metavar='PATH', type=str)
@click.option('--kimg',         help='Total training duration', metavar='KIMG',                 type=POSITIVE, default=25000, show_default=True)
@click.option('--tick',         help='How often to print progress', metavar='KIMG',             type=POSITIVE, default=4, show_default=True)
@click.option('--snap',         help='How often to save snapshots', metavar='TICKS',            type=click.IntRange(min=1), default=50, show_default=True)
@click.option('--seed',         help='Random seed', metavar='INT',                              type=cli.SEED, default=0, show_default=True)
@click.option('--nobench',      help='Disable cuDNN benchmarking', metavar='BOOL',              type=bool, default=False, show_default=True)
@click.option('--workers',      help='DataLoader worker processes (0 = load in the training process)', metavar='INT', type=click.IntRange(min=0), default=3, show_default=True)
@click.option('--device',       help='Where to train (auto = cuda if available)',               type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
@click.option('-n','--dry-run', help='Print training options and exit',                         is_flag=True)

# EG3D.
@click.option('--neural_rendering_resolution_initial', help='Resolution to render at  [default: varies]', metavar='INT', type=click.IntRange(min=1))
@click.option('--neural_rendering_resolution_final', help='Final resolution to render at, if blending', metavar='INT', type=click.IntRange(min=1))
@click.option('--neural_rendering_resolution_fade_kimg', help='Kimg to blend resolution over', metavar='INT', type=click.IntRange(min=0), default=1000, show_default=True)
@click.option('--blur_fade_kimg', help='Blur over how many kimg (at batch 32)  [default: varies]', metavar='INT', type=click.IntRange(min=1))
@click.option('--gen_pose_cond', help='If true, enable generator pose conditioning.', metavar='BOOL', type=bool, default=False, show_default=True)
@click.option('--c-scale',      help='Scale factor for generator pose conditioning.', metavar='FLOAT', type=cli.FiniteRange(min=0), default=1, show_default=True)
@click.option('--gpc_reg_prob', help='Strength of swapping regularization (with --gen_pose_cond).', metavar='FLOAT', type=cli.FiniteRange(min=0, max=1), default=0.5, show_default=True)
@click.option('--gpc_reg_fade_kimg', help='Length of swapping prob fade', metavar='INT', type=click.IntRange(min=0), default=1000, show_default=True)
@click.option('--disc_c_noise', help='Strength of discriminator pose conditioning regularization, in standard deviations.', metavar='FLOAT', type=cli.FiniteRange(min=0), default=0, show_default=True)
@click.option('--sr_noise_mode', help='Type of noise for superresolution', type=click.Choice(['random', 'none']), default='none', show_default=True)
@click.option('--resume_blur',  help='Enable to blur even on resume', metavar='BOOL', type=bool, default=False, show_default=True)
@click.option('--sr_num_fp16_res', help='Number of fp16 layers in superresolution (CUDA only)  [default: varies]', metavar='INT', type=click.IntRange(min=0))
@click.option('--g_num_fp16_res', help='Number of fp16 layers in generator (CUDA only)', metavar='INT', type=click.IntRange(min=0), default=0, show_default=True)
@click.option('--d_num_fp16_res', help='Number of fp16 layers in discriminator (CUDA only)  [default: varies]', metavar='INT', type=click.IntRange(min=0))
@click.option('--style_mixing_prob', help='Style-mixing regularization probability for training.', metavar='FLOAT', type=cli.FiniteRange(min=0, max=1), default=0, show_default=True)
@click.option('--sr-module',    help='Superresolution module override', metavar='STR', type=str)
@click.option('--density_reg',  help='Density regularization strength.', metavar='FLOAT', type=cli.FiniteRange(min=0), default=0.25, show_default=True)
@click.option('--density_reg_every', help='lazy density reg', metavar='INT', type=click.IntRange(min=1), default=4, show_default=True)
@click.option('--density_reg_p_dist', help='density regularization strength.', metavar='FLOAT', type=cli.FiniteRange(min=0), default=0.004, show_default=True)
@click.option('--reg_type',     help='Type of regularization', type=click.Choice(['l1', 'monotonic-detach', 'monotonic-fixed']), default='l1', show_default=True)
@click.option('--decoder_lr_mul', help='decoder learning rate multiplier.', metavar='FLOAT', type=cli.FiniteRange(min=0), default=1, show_default=True)

def main(**kwargs):
    """Train EG3D's tri-plane GAN ("Efficient Geometry-aware 3D Generative Adversarial Networks").

    Examples:

    \b
    # The CPU-sized synthetic preset on synthetic heads (64x64).
    python train.py --outdir=training-runs --cfg=synthetic --data=heads64.zip \\
        --gpus=1 --batch=4 --gamma=1 --tick=0.1 --snap=10

    \b
    # FFHQ at 512x512 on 8 GPUs (EG3D's recipe), or the same as 8 torchrun processes.
    python train.py --outdir=training-runs --cfg=ffhq --data=FFHQ_512.zip \\
        --gpus=8 --batch=32 --gamma=1 --gen_pose_cond=True
    torchrun --nproc_per_node=8 train.py --outdir=training-runs --cfg=ffhq --data=FFHQ_512.zip \\
        --gpus=8 --batch=32 --gamma=1 --gen_pose_cond=True

    \b
    # Circular-DPO of the bundled two-stage flow model (the embedded demo), or of yours on a bank you labelled.
    python train.py --generator=flow --method=circular-dpo
    python train.py --generator=flow --resume=flow.pt --bank=flow-bank --labels=labels.jsonl --reward-model=r.pt \\
        --ablation=all

    \b
    # Fine-tune from a network pickle you trust (ours or NVIDIA's).
    python train.py --outdir=training-runs --cfg=ffhq --data=FFHQ_512.zip --gpus=8 --batch=32 --gamma=1 \\
        --gen_pose_cond=True --resume=ffhq512-128.pkl --trust-pickle --resume-kimg=25000
    """
    explicit = explicit_options(click.get_current_context())
    generator, _method = generator_and_method(kwargs)
    if generator == 'flow':
        run_circular_dpo(kwargs, explicit)
        return
    flow_only = sorted(explicit & {f.name for f in circular_config.CircularDPOConfig.flags()} - set(FLOW_SHARED))
    if flow_only:
        raise click.UsageError(f'--{flow_only[0].replace("_", "-")} is a Circular-DPO option: add --generator=flow')
    c, desc, outdir = make_config(kwargs, explicit)
    check_resume(c)
    launch_training(c=c, desc=desc, outdir=outdir, dry_run=kwargs['dry_run'])

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
