"""The bundled two-stage flow model of synthetic heads: a coarse occupancy grid, then a truncated-SDF patch per voxel."""

import io
import math
import os

import numpy as np
import torch
from torch import nn

from dnnlib.util import atomic_write, error_line, open_regular
from eg3d_rlhf.generators.flow import (FlowGenerator, FlowPipeline, FlowStage, as_batch, blur, cfm_loss, check_sampler,
    per_sample)
from eg3d_rlhf.geometry.sigma import MAX_CUBE_LENGTH, is_number
from torch_utils import misc, safetensors_file

#----------------------------------------------------------------------------
# Stage 1 (structure) draws x [1, G, G, G] whose sign is the occupancy of G^3 coarse voxels; its decode thresholds at
# 0 (not differentiable). Stage 2 (detail) draws x [1, R, R, R] with R = G * P: a P^3 patch of normalised truncated
# SDF per coarse voxel, sdf / truncation in [-1, 1]. Its velocity model sees the active voxels and is zero outside
# them, so inactive voxels keep their noise and decode to EMPTY. The fine volume lies on CubeGrid(R, cube_length)'s
# points, fine point g * P + p in coarse voxel g. Raw sigma = LEVEL - SPAN * clamp(sdf / truncation, -1, 1): level 10
# on the SDF zero, 30 deep inside, -10 (empty) from one truncation outside. Encoding an asset marks a coarse voxel
# active when any of its fine points has sigma >= LEVEL, and gives 0 on inactive voxels (a model-independent term of
# MSE_t there, which cancels in Flow-DPO's differences of tuned and reference errors on the same x0).

FORMAT = 'eg3d_rlhf.flow/1'
LEVEL = 10.0            # Raw sigma on the surface (our meshes' level).
SPAN = 20.0             # Raw sigma per unit of normalised SDF.
EMPTY = -10.0           # Raw sigma of inactive voxels and far outside.

# The default preset's detail stage draws a 2^3 patch a coarse voxel (a 32^3 truncated SDF, which the field reads
# trilinearly at any resolution). The first bundled model drew 4^3 patches (64^3): 64 values a voxel through 32
# hidden channels came out lumpy, about 2x the training heads' lumpiness (checkpoints/README.md); a 32^3 SDF read
# trilinearly is within 0.11 fine voxels (RMS, near the surface) of the heads' true 64^3 SDF, and smoother.
# `mirror` makes the model left-right symmetric in law, as its training heads are (they have no defects): each velocity
# is the mean of the net's output and its mirror image's (so a fine-tuned copy stays mirror-equivariant too), and the
# structure's decode thresholds the mean of x and its mirror image (the training heads' 16^3 structures are exactly
# symmetric, so this removes model error only). Each sample keeps the asymmetry of its own noise.
PRESETS = {
    'tiny':     dict(grid=4, patch=2, channels=8, layers=2, conditions=2, truncation=2.0, cube_length=1.0,
                    heads=8, data_seed=0, build_spread=0.0, smooth=0.0, ode_steps=4, sampler='euler', mirror=False),
    'default':  dict(grid=16, patch=2, channels=32, layers=4, conditions=8, truncation=2.0, cube_length=1.0,
                    heads=1024, data_seed=0, build_spread=0.15, smooth=0.7, ode_steps=8, sampler='heun', mirror=True),
}
CONFIG_KEYS = frozenset(PRESETS['default'])


def sdf_to_sigma(sdf, truncation):
    """Raw sigma of a signed distance (world units): LEVEL on the zero level, EMPTY from `truncation` outside."""
    return LEVEL - SPAN * (sdf / truncation).clamp(-1, 1)


def sigma_to_sdf(sigma, truncation):
    """The signed distance behind raw sigma, exact within the truncation band (clamped to +-truncation beyond)."""
    return (LEVEL - sigma).clamp(-SPAN, SPAN) / SPAN * truncation


def truncation_length(config):
    """The truncation of a config in world units (config['truncation'] is in fine voxels)."""
    c = check_config(config)
    return c['truncation'] * c['cube_length'] / (c['grid'] * c['patch'] - 1)


# The numbers of a config, each in a range no sane run leaves (a damaged or edited checkpoint may hold anything).
INT_RANGES = dict(grid=(1, 256), patch=(1, 16), channels=(1, 4096), layers=(1, 64), conditions=(1, 1 << 16),
    heads=(1, 1 << 24), ode_steps=(1, 10000), data_seed=(0, (1 << 32) - 1))


def check_config(config):
    """A full config (plain dict) from a partial one over the default preset; ValueError naming a bad key: every
    number of the right type, finite and in its range (INT_RANGES; truncation in (0, grid * patch] fine voxels,
    cube_length in (0, MAX_CUBE_LENGTH]), and a known sampler."""
    if not isinstance(config, dict):
        raise ValueError(f'a flow config must be a dict, got {type(config).__name__}')
    unknown = sorted(set(config) - CONFIG_KEYS, key=repr)   # Keys of any type.
    if unknown:
        raise ValueError(f'unknown flow config keys {unknown}; known: {sorted(CONFIG_KEYS)}')
    config = dict(PRESETS['default'], **config)
    for key, (low, high) in INT_RANGES.items():
        if isinstance(config[key], bool) or not isinstance(config[key], int) or not low <= config[key] <= high:
            raise ValueError(f'flow config {key} must be an integer in [{low}, {high}], got {config[key]!r}')
    if config['grid'] * config['patch'] < 2:
        raise ValueError('flow config needs grid * patch >= 2')
    if not is_number(config['build_spread'], 0, 1) or not config['build_spread'] < 1:
        raise ValueError(f'flow config build_spread must be a number in [0, 1), got {config["build_spread"]!r}')
    if not is_number(config['smooth'], 0, 4):
        raise ValueError(f'flow config smooth must be a number in [0, 4] (fine voxels), got {config["smooth"]!r}')
    fine = config['grid'] * config['patch']
    if not is_number(config['truncation'], 0, fine) or not config['truncation'] > 0:
        raise ValueError(f'flow config truncation must be a finite number in (0, {fine}] (fine voxels), got '
            f'{config["truncation"]!r}')
    if not is_number(config['cube_length'], 0, MAX_CUBE_LENGTH) or not config['cube_length'] > 0:
        raise ValueError(f'flow config cube_length must be a finite number in (0, {MAX_CUBE_LENGTH:g}], got '
            f'{config["cube_length"]!r}')
    if not isinstance(config['mirror'], bool):
        raise ValueError(f'flow config mirror must be true or false, got {config["mirror"]!r}')
    check_sampler(config['sampler'])
    return config

#----------------------------------------------------------------------------

def time_features(t, count=8):
    """Sinusoidal features [N, 2 * count] of t [N] in [0, 1]."""
    freqs = torch.exp(torch.linspace(0, math.log(100.0), count, device=t.device))
    angles = t[:, None] * freqs[None] * math.pi
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def coordinates(n, batch, device):
    """Normalised coordinates [batch, 3, n, n, n] in [-1, 1], (x, y, z) channels on (x, y, z) axes."""
    axis = torch.linspace(-1, 1, n, device=device)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing='ij'))
    return grid[None].expand(batch, -1, -1, -1, -1)


def fold(x, patch):
    """[N, C, G*P, G*P, G*P] -> [N, C*P^3, G, G, G]: each P^3 patch as channels of its coarse voxel."""
    n, c, r = x.shape[0], x.shape[1], x.shape[2]
    g, p = r // patch, patch
    misc.assert_shape(x, [n, c, g * p, g * p, g * p])
    return x.reshape(n, c, g, p, g, p, g, p).permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(n, c * p ** 3, g, g, g)


def unfold(x, patch):
    """The inverse of fold: [N, C*P^3, G, G, G] -> [N, C, G*P, G*P, G*P]."""
    n, g, p = x.shape[0], x.shape[2], patch
    c = x.shape[1] // p ** 3
    misc.assert_shape(x, [n, c * p ** 3, g, g, g])
    return x.reshape(n, c, p, p, p, g, g, g).permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(n, c, g * p, g * p, g * p)


class ConvVelocity(nn.Module):
    """A small 3D conv net v(x, t, cond, context) over a cube x [N, 1, G*P, G*P, G*P] that works on the coarse grid:
    each P^3 patch of x is folded into channels of its voxel, beside the voxel's coordinates and any context
    channels; time and condition embeddings are added after every hidden layer; the output is unfolded back.
    Near t = 1 the velocity is close to -x / (1 - t) plus a denoised guess, which a few hidden channels cannot
    pass through for P^3 values a voxel, so a skip adds a learned per-time scale of x itself. Inside
    flow.batch_invariant() a sample's output does not depend on its batch (embeddings and activations per sample)."""

    batch_invariant = True          # Honours flow.batch_invariant() (FlowGenerator's invariant draws).

    def __init__(self,
        grid,                       # Coarse cube side G (the conv layers' resolution).
        channels,                   # Hidden channels.
        layers,                     # Hidden 3x3x3 conv layers.
        conditions,                 # Condition values (an embedding each); None = unconditional.
        patch       = 1,            # Side P of the patch of x folded into each coarse voxel.
        extra       = 0,            # Channels of context features beside x (extra_features).
        mirror      = False,        # Average the output with the mirror image's (x -> -x): mirror-equivariant.
    ):
        super().__init__()
        self.grid, self.patch, self.channels, self.mirror = int(grid), int(patch), int(channels), bool(mirror)
        inputs = self.patch ** 3 + 3 + extra
        self.convs = nn.ModuleList([nn.Conv3d(inputs if i == 0 else channels, channels, 3, padding=1)
            for i in range(layers)])
        self.time = nn.Sequential(nn.Linear(16, channels), nn.SiLU(), nn.Linear(channels, channels * layers))
        self.cond = None if conditions is None else nn.Embedding(conditions, channels * layers)
        self.out = nn.Conv3d(channels, self.patch ** 3, 3, padding=1)
        self.skip = nn.Linear(16, self.patch ** 3)                     # Per-channel scale of x, from time features.
        for layer in (self.out, self.skip):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def extra_features(self, context):
        """Context channels [N, extra, G, G, G] (none by default)."""
        return []

    def mask(self, context):
        """Where v may be non-zero ([N, 1, G, G, G] float, per coarse voxel) or None for everywhere."""
        return None

    def embedding(self, t, cond):
        """Each hidden layer's bias from time and condition, [N, layers * channels]."""
        emb = self.time(time_features(t))
        return emb if self.cond is None else emb + self.cond(cond)

    def skip_scale(self, t):
        """The skip's per-channel scale of x, [N, P^3]."""
        return self.skip(time_features(t))

    def mirror_context(self, context):
        """The context of the mirror image (x -> -x; none by default)."""
        return context

    def forward(self, x, t, cond, context):
        if not self.mirror:
            return self.field(x, t, cond, context)
        mirrored = self.field(x.flip(2), t, cond, self.mirror_context(context)).flip(2)
        return (self.field(x, t, cond, context) + mirrored) / 2

    def field(self, x, t, cond, context):
        """The net's own velocity, without mirror averaging."""
        n, g, r = x.shape[0], self.grid, self.grid * self.patch
        misc.assert_shape(x, [n, 1, r, r, r])
        folded = fold(x, self.patch)
        h = torch.cat([folded, coordinates(g, n, x.device), *self.extra_features(context)], dim=1)
        emb = per_sample(self.embedding, t, cond)
        for conv, bias in zip(self.convs, emb.view(n, len(self.convs), self.channels, 1, 1, 1).unbind(1)):
            h = per_sample(nn.functional.silu, as_batch(conv, h) + bias)
        v = as_batch(self.out, h) + per_sample(self.skip_scale, t)[:, :, None, None, None] * folded
        mask = self.mask(context)
        return unfold(v if mask is None else v * mask, self.patch)


class DetailVelocity(ConvVelocity):
    """Stage 2's velocity: sees which coarse voxels are active and is zero outside them."""

    def __init__(self, grid, patch, channels, layers, conditions, mirror=False):
        super().__init__(grid, channels, layers, conditions, patch=patch, extra=1, mirror=mirror)

    def extra_features(self, context):
        return [self.mask(context)]

    def mirror_context(self, context):
        return context.flip(1)

    def mask(self, context):
        misc.assert_shape(context, [None, self.grid, self.grid, self.grid])
        return context[:, None].float()

#----------------------------------------------------------------------------

class Structure(FlowStage):
    """Stage 1: occupancy of the coarse grid, x [1, G, G, G] with data in {-1, +1}; decode: active voxels [N, G, G, G]
    (with `mirror`, where x plus its mirror image is >= 0: symmetric, and an encoded asset's voxels or their images)."""

    name = 'structure'

    def __init__(self, velocity, grid, patch, mirror=False):
        super().__init__(velocity)
        self.grid, self.patch, self.mirror = int(grid), int(patch), bool(mirror)

    def data_shape(self, context):
        return (1, self.grid, self.grid, self.grid)

    def decode(self, x1, context):
        g = self.grid
        misc.assert_shape(x1, [None, 1, g, g, g])
        return (x1 + x1.flip(2))[:, 0] >= 0 if self.mirror else x1[:, 0] > 0

    def encode(self, asset, context):
        g, p = self.grid, self.patch
        misc.assert_shape(asset, [None, g * p, g * p, g * p])
        active = asset.reshape(len(asset), g, p, g, p, g, p).amax(dim=(2, 4, 6)) >= LEVEL
        return torch.where(active, 1.0, -1.0)[:, None].to(asset.dtype)


class Detail(FlowStage):
    """Stage 2: normalised truncated SDF x [1, R, R, R] (R = G * P), read on the active voxels; decode: raw sigma,
    low-passed by a Gaussian of `smooth` fine voxels (0: none), a fixed part of the decoder."""

    name = 'detail'

    def __init__(self, velocity, grid, patch, smooth=0.0):
        super().__init__(velocity)
        self.grid, self.patch, self.resolution = int(grid), int(patch), int(grid) * int(patch)
        self.smooth = float(smooth)

    def data_shape(self, context):
        return (1, self.resolution, self.resolution, self.resolution)

    def fine_mask(self, active):
        g, p = self.grid, self.patch
        misc.assert_shape(active, [None, g, g, g])
        return active[:, :, None, :, None, :, None].expand(-1, g, p, g, p, g, p).reshape(len(active), *[g * p] * 3)

    def decode(self, x1, active):
        r = self.resolution
        misc.assert_shape(x1, [len(active), 1, r, r, r])
        sigma = torch.where(self.fine_mask(active), LEVEL - SPAN * x1[:, 0].clamp(-1, 1), EMPTY)
        return blur(sigma[:, None], self.smooth)[:, 0] if self.smooth else sigma

    def encode(self, asset, active):
        r = self.resolution
        misc.assert_shape(asset, [len(active), r, r, r])
        x = ((LEVEL - asset) / SPAN).clamp(-1, 1)
        return torch.where(self.fine_mask(active), x, 0.0)[:, None]


def build_pipeline(config, init_seed=None):
    """The FlowPipeline of a config (a partial dict over the default preset), freshly initialised (from torch's global
    generator, or from init_seed without touching it)."""
    c = check_config(config)
    g, p = c['grid'], c['patch']
    with torch.random.fork_rng(devices=[], enabled=init_seed is not None):
        if init_seed is not None:
            torch.manual_seed(init_seed)
        m = c['mirror']
        structure = Structure(ConvVelocity(g, c['channels'], c['layers'], c['conditions'], mirror=m), g, p, mirror=m)
        detail = Detail(DetailVelocity(g, p, c['channels'], c['layers'], c['conditions'], mirror=m), g, p,
            smooth=c['smooth'])
    return FlowPipeline([structure, detail], conditions=c['conditions'], name='heads-structure-detail')


def build_generator(pipeline, config, path=None, **kwargs):
    """FlowGenerator of a pipeline built from config (its box, ODE steps and sampler unless kwargs say otherwise)."""
    c = check_config(config)
    kwargs = dict(dict(cube_length=c['cube_length'], steps=c['ode_steps'], sampler=c['sampler'], empty_sigma=EMPTY,
        level=LEVEL, config=c), **kwargs)
    return FlowGenerator(pipeline, path=path, **kwargs)

#----------------------------------------------------------------------------
# Training: both stages at once by conditional flow matching, stage 2 teacher-forced on the encoded true structure.
# Step k draws its batch, times and noise from generators seeded by (seed, k), so a resumed run repeats the steps an
# uninterrupted one would have taken.

def encode_assets(pipeline, sigma):
    """Each stage's x1 [N, *data_shape] and the contexts they see, of assets' raw sigma [N, R, R, R]."""
    structure, detail = pipeline.stages
    x1_structure = structure.encode(sigma, None)
    active = structure.decode(x1_structure, None)
    return [(x1_structure, None), (detail.encode(sigma, active), active)]


def training_loss(pipeline, sigma, cond, generator):
    """[CFM loss of each stage] of a batch of assets (raw sigma [N, R, R, R], cond [N] int64)."""
    losses = []
    for stage, (x1, context) in zip(pipeline.stages, encode_assets(pipeline, sigma)):
        x0 = torch.randn(x1.shape, generator=generator).to(x1.device)
        losses.append(cfm_loss(stage.velocity, x0, x1, cond, context, generator=generator))
    return losses


def make_optimizer(pipeline, lr):
    return torch.optim.Adam([p for m in pipeline.modules() for p in m.parameters()], lr=lr, betas=(0.9, 0.99))


def train_step(pipeline, optimizer, assets, conditions, step, batch, seed):
    """One Adam step of both stages on `batch` assets picked from assets [H, R, R, R] (cond [H]); [loss per stage]."""
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0]))
    pick = torch.randint(len(assets), [batch], generator=gen)
    device = pipeline.device
    for m in pipeline.modules():
        m.train().requires_grad_(True)
    losses = training_loss(pipeline, assets[pick].to(device), conditions[pick].to(device), gen)
    optimizer.zero_grad(set_to_none=True)
    sum(losses).backward()
    optimizer.step()
    return [loss.detach().item() for loss in losses]

#----------------------------------------------------------------------------
# Checkpoints: a plain dict of tensors, numbers and strings, written as a safetensors file when the path ends in
# .safetensors (torch_utils/safetensors_file.py: tensors 'state_dicts.<stage>.<name>' and 'training.optimizer...',
# the rest as JSON metadata, the format under 'eg3d_rlhf.format'), else as a torch zip that torch.load(weights_only=True)
# reads. read_flow tells them apart by their first bytes, so .pt files from before still load.

def save_flow(path, pipeline, config, training=None):
    """Write a checkpoint of the pipeline atomically: dict(format, config, state_dicts [per stage], training)."""
    state = dict(format=FORMAT, config=check_config(config),
        state_dicts=[{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in pipeline.modules()],
        training={} if training is None else training)
    write_flow(path, state)


def write_flow(path, state):
    """Write a checkpoint dict atomically, as safetensors when `path` ends in .safetensors, else as a torch zip."""
    if safetensors_file.is_safetensors_path(path):
        safetensors_file.save(path, state)
        return
    with atomic_write(path, 'wb') as f:
        torch.save(state, f)


def convert_flow(src, dst):
    """Rewrite the checkpoint `src` (checked as read_flow checks it) in the format `dst`'s extension names."""
    write_flow(dst, read_flow(src))


def read_flow(path):
    """A checkpoint's dict, validated (config, and weights that are exactly the pipeline's: names, shapes, dtypes);
    ValueError of one line when the file is not one. The file is read once (a dnnlib.util.FrozenFile: its bytes)."""
    try:
        with open_regular(path, 'rb', error=ValueError) as f:
            blob = f.read()
    except FileNotFoundError:
        raise ValueError(f'{path}: no such flow checkpoint') from None
    except OSError as err:
        raise ValueError(f'{path}: cannot read it ({err.strerror or err})') from None
    if safetensors_file.is_safetensors_blob(blob):
        state = safetensors_file.load(path, (FORMAT,), blob=blob)
    else:
        try:
            state = torch.load(io.BytesIO(blob), map_location='cpu', weights_only=True)
        except Exception as err:    # Pickles with code, truncated files, other formats.
            raise ValueError(f'{path}: not a flow checkpoint readable as data ({error_line(err)})') from None
    if not isinstance(state, dict) or state.get('format') != FORMAT:
        got = state.get('format') if isinstance(state, dict) else type(state).__name__
        raise ValueError(f'{path}: not a flow checkpoint (format {got!r}, expected {FORMAT!r})')
    if isinstance(state.get('config'), dict):
        state['config'].setdefault('build_spread', 0.0)               # Checkpoints from before builds: world heads,
        state['config'].setdefault('smooth', 0.0)                     # and a decode without smoothing,
        state['config'].setdefault('mirror', False)                   # nor mirror averaging.
    try:
        state['config'] = check_config(state['config'])
    except (KeyError, ValueError) as err:
        raise ValueError(f'{path}: bad flow config ({err})') from None
    problem = weights_problem(state) or training_problem(state.get('training'))
    if problem:
        raise ValueError(f'{path}: {problem}; the file was edited or is damaged: retrain or restore it')
    return state


def training_problem(training):
    """What is wrong with a checkpoint's training record (None, or a dict whose step, when given, is a count that a
    resumed run starts from), or None."""
    if training is not None and not isinstance(training, dict):
        return f'its training record is a {type(training).__name__}, not a dict'
    step = (training or {}).get('step', 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f'training.step is {step!r}; expected an integer >= 0'
    return None


def weights_problem(state):
    """What is wrong with a checkpoint's state_dicts for the pipeline its config builds (names, shapes, dtypes, nan),
    or None; the pipeline is built on the meta device, so a config asking for huge layers allocates nothing."""
    with torch.device('meta'):
        modules = build_pipeline(state['config'], init_seed=0).modules()
    stored = state.get('state_dicts')
    if not isinstance(stored, list) or len(stored) != len(modules) or not all(isinstance(sd, dict) for sd in stored):
        return f'it holds no list of {len(modules)} state dicts, one per stage'
    for i, (module, sd) in enumerate(zip(modules, stored)):
        expected = {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}
        got = {k: (tuple(v.shape), v.dtype) if torch.is_tensor(v) else None for k, v in sd.items()}
        differ = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        if differ:
            k = differ[0]
            what = 'missing' if k not in got else 'not expected' if k not in expected else 'not a tensor' \
                if got[k] is None else f'{list(got[k][0])} {got[k][1]}, expected {list(expected[k][0])} {expected[k][1]}'
            return f'stage {i} weight {k} is {what}' + (f' (and {len(differ) - 1} more differ)' if len(differ) > 1 else '')
        bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            return f'stage {i} weight {bad[0]} holds nan or inf'
    return None


def load_pipeline(state, device='cpu'):
    """The FlowPipeline of a checkpoint dict, on device."""
    pipeline = build_pipeline(state['config'])
    modules = pipeline.modules()
    if len(state['state_dicts']) != len(modules):
        raise ValueError(f'flow checkpoint has {len(state["state_dicts"])} state dicts, the pipeline {len(modules)}')
    for module, sd in zip(modules, state['state_dicts']):
        module.load_state_dict(sd)
        module.to(device).eval().requires_grad_(False)
    return pipeline


def load_flow(path, device='cpu', **kwargs):
    """FlowGenerator of a checkpoint on device (kwargs go to FlowGenerator); it keeps the checkpoint's config."""
    state = read_flow(path)
    return build_generator(load_pipeline(state, device), state['config'], path=os.path.abspath(path), **kwargs)

#----------------------------------------------------------------------------
# The flow family's file functions (generators/registry.py): a checkpoint is a torch.save zip archive read as data.

ZIP_MAGIC = b'PK\x03\x04'     # torch.save's archives are zip files.


def is_flow_file(path):
    """Does the file start like a torch.save zip archive or a safetensors file (what save_flow writes)? Reads 9 bytes;
    read_flow checks the rest when it loads."""
    with open_regular(path, 'rb') as f:
        return f.read(4) == ZIP_MAGIC or safetensors_file.is_safetensors(path)


def checkpoint_conditions(path):
    """The number of conditions a checkpoint's config names, read as data (ValueError when it is no checkpoint)."""
    return read_flow(path)['config']['conditions']


def save_generator(path, generator, info=None):
    """save_flow of a FlowGenerator's pipeline with the config it keeps (load_flow's, or with_pipeline's copy of it):
    the checkpoint save_flow(path, generator.pipeline, config, training=info) writes."""
    if getattr(generator, 'config', None) is None:
        raise ValueError(f'{path}: cannot save a flow generator built in memory without a checkpoint config')
    save_flow(path, generator.pipeline, generator.config, training=info)

#----------------------------------------------------------------------------
