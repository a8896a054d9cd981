"""The EG3D method: EG3D's training loop from train.py's options, with the reward phase and panel under --reward."""

import contextlib
import json
import os
import shlex

import torch

import dnnlib
from eg3d_rlhf.analysis import image_metrics
from eg3d_rlhf.analysis import training_metrics
from eg3d_rlhf.finetune import panel
from eg3d_rlhf.finetune import recipes
from eg3d_rlhf.finetune import run_dir as runs
from eg3d_rlhf.finetune.config import RewardFinetuneConfig
from eg3d_rlhf.finetune.options import ConfigError, RunError
from eg3d_rlhf.generators import registry
from eg3d_rlhf.generators.base import file_sha256, seed_ranges
from eg3d_rlhf.rewards import aggregate
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, shared_reward
from eg3d_rlhf.synthetic import demo
from torch_utils import custom_ops
from training import distributed
from training import legacy
from training import presets
from training.dataset import DatasetError
from training import training_loop

#----------------------------------------------------------------------------
# From options to a config. The options are train.py's (click's parameter dict): EG3D's own and the reward fields of
# config.RewardFinetuneConfig. A --recipe fills in what was not given, then the embedded demo does (with --reward and
# none of --cfg, --data, --gpus, --batch, --gamma). The reward config is built once, from the result.

def with_demo_defaults(kwargs, explicit):
    """kwargs with the embedded demo's values for every option not given (explicit), when --reward is set and none
    of --cfg, --data, --gpus, --batch, --gamma is given; otherwise kwargs, after checking the required options."""
    missing = [k for k in ('outdir', *demo.REQUIRED) if kwargs.get(k) is None]
    if kwargs.get('reward') in (None, 'none') or any(kwargs.get(k) is not None for k in demo.REQUIRED):
        if missing:
            hint = ' (or, with --reward, none of --cfg, --data, --gpus, --batch, --gamma: the bundled demo)'
            raise ConfigError(f"Missing option '--{missing[0]}'{hint}")
        return trusting_the_bundled(kwargs)
    kwargs = dict(kwargs)
    for key, value in demo.OPTIONS.items():
        if key not in explicit:
            kwargs[key] = value
    kwargs['data'] = demo.dataset_path()    # Rendered into the cache by make_config, once the options are checked.
    return trusting_the_bundled(kwargs)


def trusting_the_bundled(kwargs):
    """kwargs with --trust-pickle on when --resume is the bundled generator (shipped with the code, so trusted like
    it), however it was named: the demo's default, or a saved run's file, which cannot set --trust-pickle."""
    bundled = kwargs.get('resume') is not None and registry.is_bundled(kwargs['resume'])
    return dict(kwargs, trust_pickle=True) if bundled else dict(kwargs)


def reward_config(opts):
    """The RewardFinetuneConfig of the options, its reward model resolved to an absolute path of the right kind (read
    once: the phase and the panel reuse the load); ConfigError / RunError naming the flag otherwise."""
    given = RewardFinetuneConfig.check_given(opts)
    kind = given.get('reward', 'none')
    if kind != 'none':
        if opts.resume is None:
            raise ConfigError('--reward fine-tunes a trained generator: pass --resume (and --trust-pickle)')
        path = given['reward_model'] = os.path.abspath(given.get('reward_model') or demo.reward_model(kind))
        try:
            reward = shared_reward(path, opts.device)
        except RewardCheckpointError as err:
            raise RunError(f'--reward-model: {err}')
        if reward.kind != kind:
            raise RunError(f'--reward-model: {path} is a {reward.kind} reward, but --reward={kind}')
        try:
            aggregate.aggregated(reward, given.get('reward_aggregate', 'mean'), given.get('aggregate_lambda', 1.0))
        except ValueError as err:
            raise ConfigError(f'--reward-aggregate: {path}: {err}')
    return RewardFinetuneConfig(**given)


def metrics_options(opts, explicit, trusted):
    """The training metrics' constructor kwargs (analysis/training_metrics.py, EG3D's names), or None for
    --metrics=none; ConfigError for unknown names, a missing or untrusted --inception, or --metrics-ticks without
    metrics. The feature network loads now, before anything is written. `trusted`: --trust-pickle as given."""
    if not opts.metrics:
        for key in ('metrics_ticks', 'inception'):
            if key in explicit and opts.get(key) is not None:
                raise ConfigError(f'--{key.replace("_", "-")} is for --metrics; give the metrics to compute')
        return None
    try:
        names = [spec.name for spec in training_metrics.parse_metrics(opts.metrics)]
    except training_metrics.MetricError as err:
        raise ConfigError(f'--metrics: {err}')
    if opts.inception is None:
        raise ConfigError(f'--metrics={",".join(names)} needs --inception PATH: a local feature network (NVIDIA\'s '
            'inception-2015-12-05.pkl, or a torch.export / TorchScript archive) with --trust-pickle; nothing is downloaded'
            + (' (--metrics=none turns the recipe\'s off)' if opts.get('recipe', 'none') != 'none' else ''))
    if not os.path.isfile(opts.inception):
        raise ConfigError(f'--inception: {opts.inception} does not exist (it is never downloaded)')
    try:
        image_metrics.load_inception(opts.inception, trust_pickle=trusted)
    except image_metrics.InceptionError as err:
        raise ConfigError(f'--inception: {err}')
    except Exception as err:                                                    # Any unpickling error, in one line.
        raise ConfigError(f'--inception: {opts.inception} cannot be loaded ({type(err).__name__}: '
            f'{str(err).splitlines()[0] if str(err) else "no details"})')
    return dnnlib.EasyDict(class_name='eg3d_rlhf.analysis.training_metrics.TrainingMetrics', metrics=names,
        inception=os.path.abspath(opts.inception), trust_pickle=True, seed=opts.seed)


def resolve(kwargs, explicit=()):
    """(RewardFinetuneConfig, options) of train.py's options: recipe and demo defaults filled in, every reward flag
    checked first (a bad one fails before anything else is looked at), the device picked, the metrics checked."""
    trusted = bool(kwargs.get('trust_pickle'))      # As given: the demo trusts its bundled generator, not --inception.
    try:
        kwargs = recipes.with_recipe(kwargs, explicit)
    except recipes.RecipeError as err:
        raise ConfigError(str(err))
    RewardFinetuneConfig.check_given(kwargs)
    opts = dnnlib.EasyDict(with_demo_defaults(kwargs, explicit))
    opts.metrics_kwargs = metrics_options(opts, set(explicit), trusted)
    opts = presets.with_preset_defaults(opts)
    opts.device = runs.pick_device(opts.device, opts.gpus)
    opts.report_to = runs.pick_reporter(opts.get('report_to'))
    return reward_config(opts), opts

#----------------------------------------------------------------------------
# From a config to EG3D's training options (an EasyDict that training/ reads, extra phases named by class).

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
        raise RunError(f'--data: {err}')


def add_reward_phase(c, cfg):
    """The reward term (loss_kwargs.reward_kwargs: a 'Greward' phase every reward_interval steps, or inside 'Gmain'
    with --reward-step=gan) and the reward panel (panel_kwargs)."""
    if not cfg.enabled:
        return
    c.loss_kwargs.reward_kwargs = dnnlib.EasyDict(class_name='eg3d_rlhf.finetune.RewardPhase', total_kimg=c.total_kimg,
        **cfg.phase_options())                                      # total_kimg: where a scheduled lambda_r ends.
    c.reward_interval = cfg.reward_every if cfg.reward_step == 'phase' else None    # gan: inside Gmain (training/loss.py).
    if cfg.reward_optimizer == 'own':
        c.reward_opt_kwargs = dnnlib.EasyDict(c.G_opt_kwargs)            # Adam at --glr, not rescaled for lazy reg.
    if cfg.has_panel:
        c.panel_kwargs = dnnlib.EasyDict(class_name='eg3d_rlhf.finetune.panel.RewardPanel',
            reward_model_path=cfg.reward_model, seeds=cfg.panel_seeds, truncation_psi=cfg.panel_psi,
            collateral_seeds=cfg.collateral_seeds, collateral_res=cfg.collateral_res, stop_on_hacking=cfg.stop_on_hacking,
            aggregate_kind=cfg.reward_aggregate, aggregate_lambda=cfg.aggregate_lambda, gold_taste=cfg.gold_taste,
            stop_at_peak=cfg.stop_at_peak, peak_margin=cfg.peak_margin, disagreement_stop=cfg.disagreement_stop,
            peak_noise=cfg.peak_noise, peak_patience=cfg.peak_patience, gold_study_every=cfg.gold_study_every)


def cpu_plugins():
    """The plugins of the compiled CPU kernels EG3D's training calls (their first builds go side by side)."""
    from torch_utils.ops import bias_act, triplane_sigma, upfirdn2d # pylint: disable=import-outside-toplevel
    return [bias_act.PLUGIN, upfirdn2d.PLUGIN, triplane_sigma.PLUGIN]


def build(cfg, opts):
    """(training options, run description, output folder) of a resolved config and options."""
    if not opts.dry_run:
        with custom_ops.building_in_background(cpu_plugins() if opts.device == 'cpu' else []):
            if opts.data == demo.dataset_path():
                demo.ensure_dataset()
    if opts.dry_run and opts.data == demo.dataset_path() and demo.dataset_problem() is not None:
        # A dry run of the demo before its dataset is cached (or while the cache is damaged): describe the dataset the
        # real run will put there.
        training_set_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=opts.data,
            use_labels=True, max_size=demo.DATASET['count'], xflip=False, resolution=demo.DATASET['resolution'])
        dataset_name = os.path.splitext(os.path.basename(opts.data))[0]
    else:
        training_set_kwargs, dataset_name = init_dataset_kwargs(opts.data)
    weight = cfg.reward_weight
    lambdar = f'{weight.start:g}' if weight.kind == 'constant' else f'{weight.start:g}-{weight.end:g}{weight.kind}'
    desc_parts = [f'{cfg.reward}-lambdar{lambdar}'] if cfg.enabled else []
    try:
        c, desc = presets.build_config(opts, training_set_kwargs, dataset_name, desc_parts=desc_parts)
    except presets.ConfigError as err:
        raise RunError(str(err))
    if opts.shape_prior_steps > 0:                  # Fit a new G's density to synthetic heads first (synthetic/shape_prior).
        c.shape_prior_kwargs = dnnlib.EasyDict(func_name='eg3d_rlhf.synthetic.shape_prior.fit_shape_prior',
            steps=opts.shape_prior_steps)
    add_reward_phase(c, cfg)
    c.report_to = opts.get('report_to', 'none')     # Rank 0's TensorBoard / W&B log (torch_utils/report_to.py).
    c.verbose = bool(opts.get('verbose'))           # Every option and the layer tables printed (a dry run's options too).
    if opts.metrics_kwargs is not None:
        c.metrics_kwargs, c.metrics_ticks = opts.metrics_kwargs, opts.get('metrics_ticks') or 1
    return c, desc, opts.outdir


def make_config(kwargs, explicit=()):
    """(training options, run description, output folder) from train.py's options; `explicit` names those given."""
    return build(*resolve(kwargs, explicit))

#----------------------------------------------------------------------------
# Resume, checked before anything is written: the pickle loads, its networks are the ones the options build (a changed
# --map-depth would otherwise leave layers at random), and a reward run's snapshot keeps its evidence's anchor.

def check_resume(c):
    """Check c.resume_pkl against the options and fill in c.resume_kimg (the snapshot's own kimg unless given)."""
    if c.get('resume_pkl') is None:
        return
    try:
        data = legacy.load_network_pkl(c.resume_pkl, trust=c.trust_resume_pkl)
    except (OSError, ValueError) as err:
        raise RunError(f'--resume: {err}')
    problem = training_loop.resume_fields_problem(data)            # Before anything counts on them.
    if problem is not None:
        raise RunError(f'--resume: {c.resume_pkl}: {problem}; the snapshot is damaged: resume from another one')
    unrendered_demo = c.training_set_kwargs.path == demo.dataset_path() and demo.dataset_problem() is not None
    if not unrendered_demo:                                         # (Only in a dry run: a real run renders it first.)
        training_set = dnnlib.util.construct_class_by_name(**c.training_set_kwargs)
        networks = dict(zip(['G', 'D', 'G_ema'], training_loop.build_networks(training_set, c.G_kwargs, c.D_kwargs, 'cpu')))
        problem = training_loop.architecture_mismatch(data, networks)
        if problem is not None:
            raise RunError(f'--resume: {c.resume_pkl}: {problem}; pass the options it was trained with '
                '(--cfg, --map-depth, ...)')
    anchor = data.get('reward_anchor')
    if anchor is not None and anchor.get('panel') is not None and c.get('panel_kwargs') is not None:
        problem = panel.state_mismatch(anchor['panel'], file_sha256(c.panel_kwargs.reward_model_path),
            seed_ranges(c.panel_kwargs.seeds))
        if problem is not None:
            raise RunError(f'--resume: {c.resume_pkl}: {problem}')
    if c.resume_kimg is None:
        c.resume_kimg = float((data.get('progress') or {}).get('kimg', 0))

#----------------------------------------------------------------------------
# Launching: in this process, in spawned processes (--gpus N), or as one of torchrun's processes (env://).

def print_options(c, dry_run=False):
    if c.verbose or dry_run:
        print()
        print('Training options:')
        print(json.dumps(c, indent=2))
    else:
        print(f'Training options: {os.path.join(c.run_dir, "training_options.json")} (--verbose prints them and the '
            'networks\' layers)')
    print()
    print(f'Output directory:    {c.run_dir}')
    print(f'Device:              {c.device}' + (' (training convolutions in bfloat16)' if c.get('cpu_bfloat16') else ''))
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
    runs.create(c.run_dir, c, name='training_options.json')


def run_process(rank, c):
    """One training process (rank `rank`); rank 0 also writes log.txt."""
    logging = runs.log_to(os.path.join(c.run_dir, 'log.txt')) if rank == 0 else contextlib.nullcontext()
    with logging:
        training_loop.training_loop(rank=rank, local_rank=rank, **c)


def launch_torchrun(c, desc, outdir, dry_run):
    """One of torchrun's processes (--gpus must equal WORLD_SIZE); rank 0 makes the run folder and tells the others."""
    _rank, _local_rank, world_size = distributed.torchrun_env()
    if world_size != c.num_gpus:
        raise RunError(f'--gpus={c.num_gpus}, but torchrun started {world_size} processes; they must match')
    if dry_run:
        raise RunError('--dry-run: run it without torchrun')
    rank, local_rank, _world_size = distributed.init_torchrun(c.device)
    run_dir = [None]
    if rank == 0:
        c.run_dir = runs.next_run_dir(outdir, desc)
        print_options(c)
        create_run_dir(c)
        run_dir = [c.run_dir]
    torch.distributed.broadcast_object_list(run_dir, src=0)
    c.run_dir = run_dir[0]
    with distributed.process_group_session():
        logging = runs.log_to(os.path.join(c.run_dir, 'log.txt')) if rank == 0 else contextlib.nullcontext()
        with logging:
            training_loop.training_loop(rank=rank, local_rank=local_rank, **c)


def launch_training(c, desc, outdir, dry_run):
    """Pick the run directory, print the options, then train."""
    if distributed.torchrun_env() is not None:
        launch_torchrun(c, desc, outdir, dry_run)
        return
    problem = runs.writable_problem(outdir, 'dir')                       # The demo's default --outdir included.
    if problem is not None:
        raise RunError(f'--outdir: {problem}; choose another')
    c.run_dir = runs.next_run_dir(outdir, desc)
    assert not os.path.exists(c.run_dir)
    print_options(c, dry_run)
    if dry_run:
        print('Dry run; exiting.')
        return
    create_run_dir(c)
    print('Launching processes...')
    try:
        distributed.spawn(run_process, num_processes=c.num_gpus, device_type=c.device, args=(c,))
    except (training_loop.TrainingStopped, training_loop.ResumeError) as err:
        raise RunError(str(err))
    command = next_command(c)
    if command is not None:
        print(f'Next, compare the last snapshot with where it started on held-out seeds:\n  {command}')


def next_command(c):
    """The tools/evaluate.py command comparing a reward run's last snapshot with its starting generator on held-out
    seeds, paths filled in (None for a run without the reward phase or a snapshot)."""
    snapshots = sorted(n for n in os.listdir(c.run_dir) if n.startswith('network-snapshot-') and n.endswith('.pkl'))
    reward = (c.get('panel_kwargs') or {}).get('reward_model_path')
    if not snapshots or reward is None or c.resume_pkl is None:
        return None
    original = 'bundled' if registry.is_bundled(c.resume_pkl) else shlex.quote(c.resume_pkl)
    taste = ' --annotator oracle:nose' if os.path.abspath(reward) == os.path.abspath(demo.reward_model('sigma')) else ''
    return (f'python tools/evaluate.py --original {original} --tuned {shlex.quote(os.path.join(c.run_dir, snapshots[-1]))} '
        f'--trust-pickle --reward-model {shlex.quote(os.path.relpath(reward))} --seeds 1000-1099{taste} '
        f'--outdir {shlex.quote(os.path.join(c.run_dir, "evaluate"))}')

#----------------------------------------------------------------------------

def run(cfg, common):
    """The method's runner: EG3D training (the reward phase when cfg is enabled) with the resolved options `common`."""
    c, desc, outdir = build(cfg, common)
    check_resume(c)
    launch_training(c, desc, outdir, common.dry_run)

#----------------------------------------------------------------------------
