"""EG3D's main training loop: networks, lazy-regularised Adam phases, G_ema, ticks, logs, image grids and snapshots."""

import copy
import json
import math
import os
import time

import numpy as np
import PIL.Image
import psutil
import torch

import dnnlib
from torch_utils import misc
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix
from torch_utils.report_to import open_writer
from training import distributed
from training import legacy

#----------------------------------------------------------------------------
# Image grids.

def setup_snapshot_image_grid(training_set, max_grid=None, random_seed=0):
    """((gw, gh), images [N, C, H, W] uint8, labels [N, D]) for the snapshot grids.

    EG3D's layout: about 7680x4320 pixels (7..32 columns, 4..32 rows), capped at max_grid = (gw, gh). Items are
    grouped by label and each row shows one label group; with unique camera labels every row is one pose, so the
    fakes grid shows gw identities per pose.
    """
    rnd = np.random.RandomState(random_seed)
    gw = int(np.clip(7680 // training_set.image_shape[2], 7, 32))
    gh = int(np.clip(4320 // training_set.image_shape[1], 4, 32))
    if max_grid is not None:
        gw, gh = min(gw, max_grid[0]), min(gh, max_grid[1])

    if not training_set.has_labels:
        order = list(range(len(training_set)))
        rnd.shuffle(order)
        grid_indices = [order[i % len(order)] for i in range(gw * gh)]
    else:
        groups = dict() # raw label (reversed, as EG3D keys it) -> dataset indices
        for idx in range(len(training_set)):
            key = tuple(training_set.get_details(idx).raw_label.flat[::-1])
            groups.setdefault(key, []).append(idx)
        keys = list(groups.keys())
        rnd.shuffle(keys)
        for key in keys:
            rnd.shuffle(groups[key])
        grid_indices = []
        for y in range(gh):
            key = keys[y % len(keys)]
            members = groups[key]
            grid_indices += [members[x % len(members)] for x in range(gw)]
            groups[key] = members[gw % len(members):] + members[:gw % len(members)] # Next use starts after these.

    images, labels = zip(*[training_set[i] for i in grid_indices])
    return (gw, gh), np.stack(images), np.stack(labels)


def save_image_grid(img, fname, drange, grid_size):
    """Write images [N, C, H, W] (C = 1 or 3) with values in drange as one gw x gh PNG."""
    lo, hi = drange
    img = (np.asarray(img, dtype=np.float32) - lo) * (255 / (hi - lo))
    img = np.rint(img).clip(0, 255).astype(np.uint8)
    gw, gh = grid_size
    _N, C, H, W = img.shape
    assert C in (1, 3)
    img = img.reshape(gh, gw, C, H, W).transpose(0, 3, 1, 4, 2).reshape(gh * H, gw * W, C)
    PIL.Image.fromarray(img[:, :, 0] if C == 1 else img, 'L' if C == 1 else 'RGB').save(fname)


@torch.no_grad()
def save_fakes(G_ema, grid_z, grid_c, grid_size, run_dir, kimg):
    """fakesKKKKKK.png, fakesKKKKKK_raw.png and fakesKKKKKK_depth.png (negated depth, min-max scaled) of G_ema."""
    out = [G_ema(z=z, c=c, noise_mode='const') for z, c in zip(grid_z, grid_c)]
    images = torch.cat([o['image'].cpu() for o in out]).numpy()
    images_raw = torch.cat([o['image_raw'].cpu() for o in out]).numpy()
    images_depth = -torch.cat([o['image_depth'].cpu() for o in out]).numpy()
    prefix = os.path.join(run_dir, f'fakes{kimg:06d}')
    save_image_grid(images, prefix + '.png', drange=[-1, 1], grid_size=grid_size)
    save_image_grid(images_raw, prefix + '_raw.png', drange=[-1, 1], grid_size=grid_size)
    save_image_grid(images_depth, prefix + '_depth.png', drange=[images_depth.min(), images_depth.max()], grid_size=grid_size)


def report_pictures(reporter, group, step, run_dir, names, kimg=None):
    """Log the PNGs `names` of run_dir (those that exist) as 'group/<name without .png or kimg>' at `step`."""
    for name in names:
        path = os.path.join(run_dir, name)
        tag = os.path.splitext(name)[0].replace(f'{kimg:06d}', '') if kimg is not None else os.path.splitext(name)[0]
        if reporter is not None and os.path.isfile(path):
            reporter.image(f'{group}/{tag}', step, path)

#----------------------------------------------------------------------------
# Networks.

def build_networks(training_set, G_kwargs, D_kwargs, device):
    """Fresh G, D (training mode, no gradients) and G_ema (a copy of G in eval mode) for the dataset's shape."""
    common_kwargs = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution, img_channels=training_set.num_channels)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    return G, D, G_ema


class ResumeError(ValueError):
    """A network pickle that cannot continue this run's networks (its architecture differs from the options)."""


def architecture_mismatch(resume_data, networks):
    """Why the networks of a loaded pickle differ from `networks` {'G': ..., 'D': ..., 'G_ema': ...} (one sentence:
    the first few tensors missing, extra or of another shape), or None when every name and shape matches."""
    for name, module in networks.items():
        if resume_data.get(name) is None:
            return f'it has no {name}'
        ours = {k: tuple(v.shape) for k, v in misc.named_params_and_buffers(module)}
        theirs = {k: tuple(v.shape) for k, v in misc.named_params_and_buffers(resume_data[name])}
        problems = [f'{k} is missing' for k in ours if k not in theirs]
        problems += [f'{k} is extra' for k in theirs if k not in ours]
        problems += [f'{k} is {theirs[k]}, not {ours[k]}' for k in ours if k in theirs and theirs[k] != ours[k]]
        if problems:
            more = f' and {len(problems) - 3} more' if len(problems) > 3 else ''
            return f'its {name} does not match the options ({", ".join(problems[:3])}{more})'
    return None


# What a snapshot records of its run (the loop below writes them; a resumed run counts on from them): {entry: [(field,
# kind)]}, each kind a test and what it expects.
RESUME_KINDS = {
    'kimg':  (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
              'a finite number >= 0'),
    'count': (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, 'an integer >= 0'),
    'dict':  (lambda v: isinstance(v, dict), 'a dict'),
}
RESUME_FIELDS = {'progress': [('kimg', 'kimg'), ('tick', 'count')],
    'resume_state': [('kimg', 'kimg'), ('tick', 'count'), ('batch_idx', 'count'), ('optimizers', 'dict'), ('loss', 'dict'),
        ('random', 'dict')]}


def resume_fields_problem(data):
    """What is wrong with the progress and resume state of a snapshot dict (not a dict, or a field of the wrong type, not
    finite or negative) or its networks' weights (nan or inf), in one phrase naming the field ('progress.kimg is nan;
    expected a finite number >= 0', 'G.mapping.fc0.weight holds nan or inf'); None when all are fine. A progress
    record may lack a field (older snapshots); a resume state may not."""
    for name in ('G', 'D', 'G_ema'):
        net = data.get(name)
        for key, value in misc.named_params_and_buffers(net) if isinstance(net, torch.nn.Module) else []:
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return f'{name}.{key} holds nan or inf'

    shown = lambda v: repr(v) if v is None or isinstance(v, (bool, int, float, str)) else f'a {type(v).__name__}'
    for entry, fields in RESUME_FIELDS.items():
        record = data.get(entry)
        if record is not None and not isinstance(record, dict):
            return f'{entry} is {shown(record)}; expected a dict'
        for name, kind in fields if record is not None else []:
            test, expected = RESUME_KINDS[kind]
            if not (entry == 'progress' and name not in record) and not test(record.get(name)):
                return f'{entry}.{name} is {shown(record.get(name))}; expected {expected}'
    return None


def resume_networks(resume_pkl, networks, trust=False):
    """Copy the parameters and buffers of G, D and G_ema in a network pickle (ours or NVIDIA's) into `networks` =
    {'G': ..., 'D': ..., 'G_ema': ...}, which keep this project's classes and constructor; returns the pickle's
    dict (its 'progress' and 'reward_anchor', when it has them). ResumeError unless every name and shape match."""
    with dnnlib.util.open_url(resume_pkl) as f:
        resume_data = legacy.load_network_pkl(f, trust=trust)
    problem = resume_fields_problem(resume_data)
    if problem is not None:
        raise ResumeError(f'{resume_pkl}: {problem}; the snapshot is damaged: resume from another one')
    problem = architecture_mismatch(resume_data, networks)
    if problem is not None:
        raise ResumeError(f'{resume_pkl}: {problem}; resume with the options it was trained with (--cfg, --map-depth, ...)')
    for name, module in networks.items():
        misc.copy_params_and_buffers(resume_data[name], module, require_all=True)
    return resume_data


def build_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval, reward_interval=None, reward_opt_kwargs=None):
    """Training phases with their Adam optimizers.

    With lazy regularisation (reg_interval N) a network has a 'main' phase every step and a 'reg' phase every N
    steps sharing one optimizer whose lr and betas are rescaled by N / (N + 1), as if the two ran together every
    step; without it, one 'both' phase. reward_interval adds G's 'Greward' phase every that many steps, on G's
    optimizer, or on an optimizer of its own built from reward_opt_kwargs (as given: no lazy-regularisation rescaling).
    """
    phases = []
    for name, module, opt_kwargs, reg_interval in [('G', G, G_opt_kwargs, G_reg_interval), ('D', D, D_opt_kwargs, D_reg_interval)]:
        opt_kwargs = dnnlib.EasyDict(opt_kwargs)
        if 'betas' in opt_kwargs:
            opt_kwargs.betas = [float(beta) for beta in opt_kwargs.betas] # torch's Adam refuses EG3D's [0, 0.99] (int, float).
        if reg_interval is None:
            opt = dnnlib.util.construct_class_by_name(params=module.parameters(), **opt_kwargs)
            phases += [dnnlib.EasyDict(name=name + 'both', module=module, opt=opt, interval=1)]
            continue
        mb_ratio = reg_interval / (reg_interval + 1)
        opt_kwargs.lr = opt_kwargs.lr * mb_ratio
        opt_kwargs.betas = [beta ** mb_ratio for beta in opt_kwargs.betas]
        opt = dnnlib.util.construct_class_by_name(module.parameters(), **opt_kwargs)
        phases += [dnnlib.EasyDict(name=name + 'main', module=module, opt=opt, interval=1)]
        phases += [dnnlib.EasyDict(name=name + 'reg', module=module, opt=opt, interval=reg_interval)]
    if reward_interval is not None:
        opt = phases[0].opt
        if reward_opt_kwargs is not None:
            opt_kwargs = dnnlib.EasyDict(reward_opt_kwargs)
            if 'betas' in opt_kwargs:
                opt_kwargs.betas = [float(beta) for beta in opt_kwargs.betas]
            opt = dnnlib.util.construct_class_by_name(G.parameters(), **opt_kwargs)
        phases.insert(len([p for p in phases if p.module is G]),
            dnnlib.EasyDict(name='Greward', module=G, opt=opt, interval=reward_interval))
    return phases


@torch.no_grad()
def update_ema(G_ema, G, cur_nimg, batch_size, ema_kimg, ema_rampup):
    """Move G_ema toward G with a half-life of ema_kimg thousand images (ramped up to cur_nimg * ema_rampup early
    on); buffers and rendering settings are copied."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    ema_beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.lerp(p_ema, ema_beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)
    G_ema.neural_rendering_resolution = G.neural_rendering_resolution
    G_ema.rendering_kwargs = G.rendering_kwargs.copy()

def optimizer_states(phases):
    """{phase name: optimizer state_dict} of each optimizer once (phases of one network share one)."""
    states, seen = {}, set()
    for phase in phases:
        if id(phase.opt) not in seen:
            seen.add(id(phase.opt))
            states[phase.name] = copy.deepcopy(phase.opt.state_dict())
    return states


def load_optimizer_states(phases, states):
    for phase in phases:
        if phase.name in states:
            phase.opt.load_state_dict(states[phase.name])


def random_state(device):
    """torch's (and the device's) and numpy's global random state: with it a resumed run draws what the first would."""
    state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state())
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state


def set_random_state(state, device):
    torch.set_rng_state(state['torch'])
    np.random.set_state(state['numpy'])
    if device.type == 'cuda' and 'cuda' in state:
        torch.cuda.set_rng_state(state['cuda'], device)


class TrainingStopped(RuntimeError):
    """The run stopped early (non-finite rewards or weights); the message names the last good snapshot."""


def check_finite_weights(**modules):
    """FloatingPointError naming the first module with a nan or inf parameter or buffer (none is snapshotted)."""
    for name, module in modules.items():
        if not all(bool(torch.isfinite(t).all()) for t in misc.params_and_buffers(module) if t.is_floating_point()):
            raise FloatingPointError(f'{name} has non-finite weights')

#----------------------------------------------------------------------------

class PhaseTimer:
    """Milliseconds of the last run of one phase: CUDA events on a GPU (read at the tick), the wall clock on CPU."""

    def __init__(self, device):
        self.device = device
        self.cuda = device.type == 'cuda'
        self.start_mark = self.end_mark = None

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            return event
        return time.perf_counter()

    def start(self):
        self.start_mark = self._mark()

    def stop(self):
        self.end_mark = self._mark()

    def elapsed_ms(self):
        """[] (nothing to report) before the phase first ran."""
        if self.start_mark is None or self.end_mark is None:
            return []
        if self.cuda:
            self.end_mark.synchronize()
            return self.start_mark.elapsed_time(self.end_mark)
        return (self.end_mark - self.start_mark) * 1e3

#----------------------------------------------------------------------------

def training_loop(
    run_dir                 = '.',      # Output directory.
    training_set_kwargs     = {},       # Options for the training set.
    data_loader_kwargs      = {},       # Options for torch.utils.data.DataLoader.
    G_kwargs                = {},       # Options for the generator.
    D_kwargs                = {},       # Options for the discriminator.
    G_opt_kwargs            = {},       # Options for the generator optimizer.
    D_opt_kwargs            = {},       # Options for the discriminator optimizer.
    loss_kwargs             = {},       # Options for the loss.
    random_seed             = 0,        # Global random seed.
    device                  = 'cpu',    # 'cuda' (this process uses GPU local_rank) or 'cpu'.
    num_gpus                = 1,        # Number of processes training together (GPUs, or CPU processes).
    rank                    = 0,        # Rank of this process in [0, num_gpus).
    local_rank              = 0,        # Rank of this process on its node (its GPU index).
    batch_size              = 4,        # Total batch size of one training step; may exceed batch_gpu * num_gpus.
    batch_gpu               = 4,        # Samples one process runs at a time.
    ema_kimg                = 10,       # Half-life of the generator weights' moving average (G_ema), in kimg.
    ema_rampup              = 0.05,     # EMA ramp-up coefficient, None = no ramp-up.
    G_reg_interval          = None,     # Steps between G regularisation phases, None = no lazy regularisation.
    D_reg_interval          = 16,       # Steps between D regularisation phases, None = no lazy regularisation.
    reward_interval         = None,     # Steps between G's 'Greward' phases (needs loss_kwargs.reward_kwargs), None = none.
    reward_opt_kwargs       = None,     # Options of the 'Greward' phase's own optimizer, None = it steps G's.
    panel_kwargs            = None,     # Per-tick report on G_ema, built by class name (class_name + options), None = none.
    metrics_kwargs          = None,     # Quality metrics of G_ema, built by class name (class_name + options), None = none.
    metrics_ticks           = 1,        # Ticks between metric evaluations (tick 0 and the last tick always).
    total_kimg              = 25000,    # Training length in thousands of real images.
    kimg_per_tick           = 4,        # Progress interval in kimg.
    image_snapshot_ticks    = 50,       # Ticks between image grids, None = none.
    network_snapshot_ticks  = 50,       # Ticks between network snapshots, None = none.
    resume_pkl              = None,     # Network pickle (path or file:// URL) to resume from.
    resume_kimg             = 0,        # kimg to count from when resuming.
    trust_resume_pkl        = False,    # Does the user trust resume_pkl? Loading a pickle executes code in it.
    shape_prior_kwargs      = None,     # Warm start of a new G, called by function name (func_name + options), None = none.
    cudnn_benchmark         = True,     # Set torch.backends.cudnn.benchmark?
    cpu_bfloat16            = False,    # Convolve in bfloat16 in the training phases on a CPU (panel and snapshots: float32)?
    report_to               = 'none',   # Where rank 0 also logs the stats and pictures: 'tensorboard', 'wandb' or 'none'.
    verbose                 = True,     # Print G's and D's layer tables before training?
):
    """Train G and D; returns {'G', 'D', 'G_ema'} of this process at the end."""
    # Initialize.
    start_time = time.time()
    device = torch.device(device, local_rank) if device == 'cuda' else torch.device(device)
    np.random.seed((random_seed * num_gpus + rank) % 2**32)
    torch.manual_seed(random_seed * num_gpus + rank)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = False       # Numerical accuracy over speed, as EG3D.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    conv2d_gradfix.enabled = True                       # Custom conv op: no weight gradients in R1's double backward.
    grid_sample_gradfix.enabled = False
    if num_gpus > 1:
        training_stats.init_multiprocessing(rank=rank, sync_device=device)
    log = print if rank == 0 else (lambda *args: None)

    # Load the training set.
    log('Loading training set...')
    training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
    sampler = distributed.InfiniteSampler(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=random_seed)
    log()
    log('Num images: ', len(training_set))
    log('Image shape:', training_set.image_shape)
    log('Label shape:', training_set.label_shape)
    log()

    # Construct networks, resume, print their summaries.
    log('Constructing networks...')
    G, D, G_ema = build_networks(training_set, G_kwargs, D_kwargs, device)
    anchor = exact = None                               # A reward run's starting point; the state to continue exactly.
    if resume_pkl is not None and rank == 0:
        log(f'Resuming from "{resume_pkl}"')
        resumed = resume_networks(resume_pkl, dict(G=G, D=D, G_ema=G_ema), trust=trust_resume_pkl)
        anchor, exact = resumed.get('reward_anchor'), resumed.get('resume_state')
        if exact is not None and (num_gpus > 1 or exact['kimg'] != resume_kimg):
            log('Resume state not used (it holds one process\'s random state, at its own kimg): continuing approximately')
            exact = None
        dnnlib.util.remove_stale_temporaries(os.path.dirname(os.path.abspath(resume_pkl)))
    if shape_prior_kwargs is not None and rank == 0:
        # Fits G in place, conditioned on the training labels, and returns the loss of every step.
        steps = shape_prior_kwargs.get('steps')
        log('Fitting the shape prior' + ('' if steps is None else f' for {steps} steps') + '...')
        labels = np.stack([training_set.get_label(i) for i in range(len(training_set))])
        losses = dnnlib.util.call_func_by_name(G=G, labels=labels, batch=batch_gpu, seed=random_seed, **shape_prior_kwargs)
        log(f'Shape prior: loss {losses[0]:.1f} -> {np.mean(losses[-10:]):.1f}')
        misc.copy_params_and_buffers(G, G_ema)
    if rank == 0 and verbose:
        z = torch.zeros([batch_gpu, G.z_dim], device=device)
        c = torch.from_numpy(training_set.get_label(0)).to(device).expand(batch_gpu, -1)
        img = misc.print_module_summary(G, [z, c])
        misc.print_module_summary(D, [img, c])

    # A reward run's frozen starting generator: the consistency terms' reference and the evidence's "before". A run
    # resumed from one of its snapshots keeps the first run's (reward_anchor), so it measures change from there.
    G_start = None
    if loss_kwargs.get('reward_kwargs') is not None:
        G_start = copy.deepcopy(G_ema).eval().requires_grad_(False)
        if anchor is not None:
            misc.copy_params_and_buffers(anchor['G_start'], G_start, require_all=True)
            log('Reward anchor: the reference and the panel\'s "before" are the generator the resumed run started from')

    # Distribute across processes: every rank starts from rank 0's weights.
    log(f'Distributing across {num_gpus} processes...')
    if num_gpus > 1:
        for module in [G, D, G_ema, G_start]:
            if module is not None:
                distributed.broadcast_module(module, src=0)

    # Set up the training phases (no augmentation pipeline: --aug=noaug only).
    log('Setting up training phases...')
    reference = dict(G_ema=G_start) if G_start is not None else {}     # Frozen copy for the consistency terms.
    loss = dnnlib.util.construct_class_by_name(device=device, G=G, D=D, augment_pipe=None, **reference, **loss_kwargs)
    phases = build_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval, reward_interval, reward_opt_kwargs)
    for phase in phases:
        phase.timer = PhaseTimer(device)
    if exact is not None:
        load_optimizer_states(phases, exact['optimizers'])
        loss.load_resume_state(exact['loss'])
        sampler.start = int(round(resume_kimg * 1000))                  # The images the first part already took.
        log(f'Continuing exactly: optimizer states, random state, data order and tick count of {resume_kimg:g} kimg')
    training_set_iterator = iter(torch.utils.data.DataLoader(dataset=training_set, sampler=sampler,
        batch_size=batch_size // num_gpus, **data_loader_kwargs))

    # Export the real images; draw the latents and cameras of the fakes grids.
    grid_size = grid_z = grid_c = None
    if rank == 0:
        log('Exporting sample images...')
        grid_size, images, labels = setup_snapshot_image_grid(training_set, max_grid=(None if device.type == 'cuda' else (4, 4)))
        save_image_grid(images, os.path.join(run_dir, 'reals.png'), drange=[0, 255], grid_size=grid_size)
        grid_z = torch.randn([labels.shape[0], G.z_dim], device=device).split(batch_gpu)
        grid_c = torch.from_numpy(labels).to(device).split(batch_gpu)

    # The statistics collector, before the panel: its first record's values (training_stats' Panel/*) count in tick 0's.
    stats_collector = training_stats.Collector(regex='.*')

    # The panel (rank 0): an object whose .record(G_ema, kimg) runs now and at the ticks below and .finish() at the end, each
    # returning a line to log (finish may return None).
    panel = None
    if rank == 0 and panel_kwargs is not None:
        panel = dnnlib.util.construct_class_by_name(run_dir=run_dir, device=device, **panel_kwargs)
        if anchor is not None and anchor.get('panel') is not None:
            log(panel.restore(anchor['panel'], G_start))                # The first run's ticks, then this run's.
        if not panel.kimg or panel.kimg[-1] != resume_kimg:
            log(panel.record(G_ema, resume_kimg))                        # The starting point of every trajectory.

    # The metrics (every rank: each renders and reads its share): an object whose .evaluate(G_ema, snapshot_pkl)
    # returns EG3D's result dicts (results, metric, total_time, total_time_str, num_gpus) and, on rank 0, writes them.
    metrics = None
    if metrics_kwargs is not None:
        metrics = dnnlib.util.construct_class_by_name(dataset_kwargs=training_set_kwargs, run_dir=run_dir, device=device,
            rank=rank, num_gpus=num_gpus, **metrics_kwargs)

    # Initialize logs.
    log('Initializing logs...')
    stats_jsonl = open(os.path.join(run_dir, 'stats.jsonl'), 'wt') if rank == 0 else None
    reporter = open_writer(run_dir, report_to, name=os.path.basename(run_dir)) if rank == 0 else None

    # Train.
    log(f'Training for {total_kimg} kimg...')
    log()
    cur_nimg = int(round(resume_kimg * 1000))
    cur_tick = 0
    tick_start_nimg = cur_nimg
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    batch_idx = 0
    snapshot_pkl = None
    if exact is not None:
        cur_tick, batch_idx = exact['tick'] + 1, exact['batch_idx']
        set_random_state(exact['random'], device)
    try:
        while True:

            # Fetch real images and labels; draw latents and cameras for every phase.
            phase_real_img, phase_real_c = next(training_set_iterator)
            phase_real_img = (phase_real_img.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
            phase_real_c = phase_real_c.to(device).split(batch_gpu)
            all_gen_z = torch.randn([len(phases) * batch_size, G.z_dim], device=device)
            all_gen_z = [phase_gen_z.split(batch_gpu) for phase_gen_z in all_gen_z.split(batch_size)]
            all_gen_c = [training_set.get_label(np.random.randint(len(training_set))) for _ in range(len(phases) * batch_size)]
            all_gen_c = torch.from_numpy(np.stack(all_gen_c)).to(device)
            all_gen_c = [phase_gen_c.split(batch_gpu) for phase_gen_c in all_gen_c.split(batch_size)]

            # Run the phases due at this step.
            for phase, phase_gen_z, phase_gen_c in zip(phases, all_gen_z, all_gen_c):
                if batch_idx % phase.interval != 0:
                    continue
                phase.timer.start()
                phase.opt.zero_grad(set_to_none=True)
                phase.module.requires_grad_(True)
                for real_img, real_c, gen_z, gen_c in zip(phase_real_img, phase_real_c, phase_gen_z, phase_gen_c):
                    with conv2d_gradfix.bfloat16_on_cpu(cpu_bfloat16):
                        loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c,
                            gain=phase.interval, cur_nimg=cur_nimg)
                phase.module.requires_grad_(False)
                distributed.sync_gradients(phase.module, num_gpus)
                phase.opt.step()
                phase.timer.stop()

            # Update G_ema and the counters.
            update_ema(G_ema, G, cur_nimg=cur_nimg, batch_size=batch_size, ema_kimg=ema_kimg, ema_rampup=ema_rampup)
            cur_nimg += batch_size
            batch_idx += 1

            # Tick: the first step, every kimg_per_tick, and the end.
            done = (cur_nimg >= total_kimg * 1000)
            if (not done) and (cur_tick != 0) and (cur_nimg < tick_start_nimg + kimg_per_tick * 1000):
                continue

            # Status line; the same numbers go to training_stats.
            tick_end_time = time.time()
            peak_gpu_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else 0
            peak_gpu_reserved = torch.cuda.max_memory_reserved(device) / 2**30 if device.type == 'cuda' else 0
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            fields = []
            fields += [f"tick {training_stats.report0('Progress/tick', cur_tick):<5d}"]
            fields += [f"kimg {training_stats.report0('Progress/kimg', cur_nimg / 1e3):<8.1f}"]
            fields += [f"time {dnnlib.util.format_time(training_stats.report0('Timing/total_sec', tick_end_time - start_time)):<12s}"]
            fields += [f"sec/tick {training_stats.report0('Timing/sec_per_tick', tick_end_time - tick_start_time):<7.1f}"]
            fields += [f"sec/kimg {training_stats.report0('Timing/sec_per_kimg', (tick_end_time - tick_start_time) / (cur_nimg - tick_start_nimg) * 1e3):<7.2f}"]
            fields += [f"maintenance {training_stats.report0('Timing/maintenance_sec', maintenance_time):<6.1f}"]
            fields += [f"cpumem {training_stats.report0('Resources/cpu_mem_gb', psutil.Process(os.getpid()).memory_info().rss / 2**30):<6.2f}"]
            fields += [f"gpumem {training_stats.report0('Resources/peak_gpu_mem_gb', peak_gpu_mem):<6.2f}"]
            fields += [f"reserved {training_stats.report0('Resources/peak_gpu_mem_reserved_gb', peak_gpu_reserved):<6.2f}"]
            fields += [f"augment {training_stats.report0('Progress/augment', 0):.3f}"]
            training_stats.report0('Timing/total_hours', (tick_end_time - start_time) / (60 * 60))
            training_stats.report0('Timing/total_days', (tick_end_time - start_time) / (24 * 60 * 60))
            log(' '.join(fields))

            # Panel: every tick, but tick 0 (one step in, near the start's record) only when that step is a whole tick;
            # its closing report at the end. A panel may ask to stop (its stop_reason, e.g. the reward hacking alarm):
            # this tick then ends the run, snapshot included.
            if panel is not None and (cur_tick > 0 or done or cur_nimg >= tick_start_nimg + kimg_per_tick * 1000):
                log(panel.record(G_ema, cur_nimg / 1e3))
                report_pictures(reporter, 'Panel', cur_nimg, run_dir, getattr(panel, 'pictures', ()))
                stop_reason = getattr(panel, 'stop_reason', None)
                done = done or bool(stop_reason)
                closing = panel.finish(stopped=stop_reason, G_ema=G_ema) if done else None
                if isinstance(closing, str):
                    log(closing)
                    report_pictures(reporter, 'Panel', cur_nimg, run_dir, getattr(panel, 'pictures', ()))
            if num_gpus > 1:                                            # Every rank stops where rank 0's panel did.
                flag = torch.tensor([float(done)], device=device)
                torch.distributed.broadcast(flag, src=0)
                done = bool(flag.item())

            # Image grids.
            if (rank == 0) and (image_snapshot_ticks is not None) and (done or cur_tick % image_snapshot_ticks == 0):
                save_fakes(G_ema, grid_z, grid_c, grid_size, run_dir, cur_nimg // 1000)
                report_pictures(reporter, 'Fakes', cur_nimg, run_dir,
                    [f'fakes{cur_nimg // 1000:06d}{kind}.png' for kind in ('', '_raw', '_depth')], kimg=cur_nimg // 1000)

            # Network snapshot: every rank checks that its weights equal rank 0's; rank 0 writes the pickle.
            tick_snapshot = None
            if (network_snapshot_ticks is not None) and (done or cur_tick % network_snapshot_ticks == 0):
                check_finite_weights(G=G, G_ema=G_ema)
                snapshot_data = dict(training_set_kwargs=dict(training_set_kwargs), augment_pipe=None,
                    progress=dict(kimg=cur_nimg / 1e3, tick=cur_tick))
                if G_start is not None and rank == 0:
                    snapshot_data['reward_anchor'] = dict(G_start=copy.deepcopy(G_start).cpu(),
                        panel=None if panel is None else panel.state())
                if num_gpus == 1:
                    snapshot_data['resume_state'] = dict(kimg=cur_nimg / 1e3, tick=cur_tick, batch_idx=batch_idx,
                        optimizers=optimizer_states(phases), loss=loss.resume_state(), random=random_state(device))
                for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
                    if num_gpus > 1:
                        misc.check_ddp_consistency(module, ignore_regex=r'.*\.[^.]+_(avg|ema)')
                    if rank == 0:
                        snapshot_data[name] = copy.deepcopy(module).eval().requires_grad_(False).cpu()
                if rank == 0:
                    # EG3D's names count whole kimg, so in a run shorter than 1 kimg the final snapshot replaces tick 0's.
                    snapshot_pkl = os.path.join(run_dir, f'network-snapshot-{cur_nimg // 1000:06d}.pkl')
                    legacy.save_network_pkl(snapshot_pkl, snapshot_data)
                    tick_snapshot = snapshot_pkl
                del snapshot_data # Conserve memory.

            # Metrics of G_ema (EG3D's metric-<name>.jsonl lines; their values go to stats.jsonl as Metrics/<name>).
            if (metrics is not None) and (done or cur_tick % metrics_ticks == 0):
                for result in metrics.evaluate(G_ema, snapshot_pkl=tick_snapshot):
                    for name, value in result.results.items():
                        training_stats.report0('Metrics/' + name, [] if value is None else value)
                        log(f'{name} {"nan" if value is None else f"{value:.4f}"} ({result.total_time_str})')

            # Collect statistics and append them to stats.jsonl.
            for phase in phases:
                training_stats.report0('Timing/' + phase.name, phase.timer.elapsed_ms())
            stats_collector.update()
            if stats_jsonl is not None:
                stats, timestamp = stats_collector.as_dict(), time.time()
                stats_jsonl.write(json.dumps(dict(stats, timestamp=timestamp)) + '\n')
                stats_jsonl.flush()
                reporter.scalars(cur_nimg, {name: value.mean for name, value in stats.items()}, walltime=timestamp)  # Step: images.

            # Next tick.
            cur_tick += 1
            tick_start_nimg = cur_nimg
            tick_start_time = time.time()
            maintenance_time = tick_start_time - tick_end_time
            if done:
                break
    except FloatingPointError as err:
        # Non-finite rewards or weights: what was saved stays (snapshots are written only from finite weights), the
        # panel writes its report of the ticks so far, and the caller gets one message naming the last snapshot.
        message = f'training stopped at {cur_nimg / 1e3:g} kimg: {err}'
        log(message)
        if panel is not None and panel.kimg:
            log(panel.finish(stopped=message))
            report_pictures(reporter, 'Panel', cur_nimg, run_dir, getattr(panel, 'pictures', ()))
        raise TrainingStopped(f'{message}; ' + (f'the last good snapshot is {snapshot_pkl}' if snapshot_pkl else 'no snapshot was written'))
    finally:
        if stats_jsonl is not None:
            stats_jsonl.close()
        if reporter is not None:
            reporter.close()

    # Done.
    log()
    if snapshot_pkl is not None:
        log(f'Last snapshot: {snapshot_pkl}')
    log('Exiting...')
    return dict(G=G, D=D, G_ema=G_ema)

#----------------------------------------------------------------------------
