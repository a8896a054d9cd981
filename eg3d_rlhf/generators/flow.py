"""Multi-stage flow pipelines behind the generator interface: stages, Euler and Heun samplers, flow matching's MSE_t."""

import contextlib
import contextvars
import copy
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from eg3d_rlhf.generators.base import Generator3D
from eg3d_rlhf.geometry.preview import render_surface
from eg3d_rlhf.geometry.sigma import CubeGrid, SigmaField
from torch_utils import misc

#----------------------------------------------------------------------------
# Flow matching (Circular-DPO, section 3.1). A stage's sample moves from noise x0 (t = 0) to data x1 (t = 1) along
# dx/dt = v(x_t, t, cond, context). Training follows the linear path x_t = t x1 + (1 - t) x0, whose velocity is
# x1 - x0; MSE_t(x0, x1; theta) is the per-sample error of v against it, the quantity Flow-DPO compares between the
# tuned and the reference model. Velocity models see t as [N] float32 and cond as [N] int64 (None: unconditional).

def _times(t, x):
    """t (a number or [N]) as float32 [N] on x's device."""
    return torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(x.shape[0])


def velocity_at(velocity, x, t, cond=None, context=None):
    """v(x, t, cond, context) with t a number or [N], checked to have x's shape."""
    v = velocity(x, _times(t, x), cond, context)
    misc.assert_shape(v, list(x.shape))
    return v


def mse_t(velocity, x0, x1, t, cond=None, context=None):
    """MSE_t(x0, x1) [N]: per-sample mean over elements of (v(t x1 + (1 - t) x0, t) - (x1 - x0))^2; t a number or [N]."""
    misc.assert_shape(x1, list(x0.shape))
    t = _times(t, x0)
    tt = t.view(-1, *[1] * (x0.ndim - 1))
    error = velocity_at(velocity, tt * x1 + (1 - tt) * x0, t, cond, context) - (x1 - x0)
    return error.square().flatten(1).mean(dim=1)


def cfm_loss(velocity, x0, x1, cond=None, context=None, generator=None):
    """Conditional flow matching loss: the mean of MSE_t over the batch, t ~ U(0, 1) per sample (drawn on the CPU
    with `generator`, if given)."""
    t = torch.rand([x0.shape[0]], generator=generator).to(x0.device)
    return mse_t(velocity, x0, x1, t, cond, context).mean()

#----------------------------------------------------------------------------
# Batch-invariant passes. A plain batched pass gives a sample bits that depend on its batch: on the CPU torch runs
# a 3D convolution of one sample with its own kernel and of two or more with oneDNN's, a small linear layer's
# matrix kernel blocks by the number of rows, and a vectorised exp or sin may round otherwise in a tensor's tail.
# Inside batch_invariant(), velocity models that declare batch_invariant = True (flow_heads.ConvVelocity) and blur()
# compute each sample's output with bits that do not depend on its batch mates or the batch size (alone included):
# per-sample parts (time and condition embeddings, smoothing, exp-based activations) sample by sample, and each 3D
# convolution batched, with a lone sample run beside a copy of itself so that it takes the batches' kernel (oneDNN's
# output of a sample does not depend on the batch: tests/test_flow_heads.py checks it on the model). These bits
# differ from a plain pass's by float rounding, within INVARIANT_TOLERANCE on the bundled model (docs/guides/flows.md).

INVARIANT_TOLERANCE = 1e-4      # Raw sigma: batch-invariant vs plain one-id draws of the bundled model (measured
                                # up to 1.3e-5 over 128 ids; a voxel within that of level 10 may cross it).
_INVARIANT = contextvars.ContextVar('eg3d_rlhf_flow_batch_invariant', default=False)


@contextlib.contextmanager
def batch_invariant():
    """Run flow passes batch-invariantly (see above) inside the block."""
    token = _INVARIANT.set(True)
    try:
        yield
    finally:
        _INVARIANT.reset(token)


def invariant_passes():
    """Is the caller inside batch_invariant()?"""
    return _INVARIANT.get()


def per_sample(fn, *batches):
    """fn(*batches) of batches ([N, ...] tensors or None); inside batch_invariant() one sample at a time, so each gets
    a lone sample's bits."""
    n = len(batches[0])
    if not invariant_passes() or n < 2:
        return fn(*batches)
    return torch.cat([fn(*(None if b is None else b[k : k + 1] for b in batches)) for k in range(n)])


def as_batch(layer, x):
    """layer(x) of a batch x [N, ...]; inside batch_invariant() a lone sample runs beside a copy of itself, so that a
    3D convolution takes the kernel batches take."""
    if invariant_passes() and len(x) == 1:
        return layer(x.expand(2, *x.shape[1:]))[:1]
    return layer(x)


def blur(g, std):
    """g [N, C, D, H, W] blurred by a separable Gaussian of `std` voxels (borders replicated); other shapes refused.
    Inside batch_invariant() one sample at a time."""
    if g.ndim != 5:
        raise ValueError(f'smoothing needs a volume stage (data [N, C, D, H, W]), got shape {list(g.shape)}')
    if invariant_passes() and len(g) > 1:
        return per_sample(lambda one: blur(one, std), g)
    radius = max(1, int(math.ceil(3 * std)))
    x = torch.arange(-radius, radius + 1, dtype=g.dtype, device=g.device)
    kernel = torch.exp(-0.5 * (x / std) ** 2)
    kernel = kernel / kernel.sum()
    n, c = g.shape[:2]
    out = g.reshape(n * c, 1, *g.shape[2:])
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(kernel)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode='replicate'), kernel.view(shape))
    return out.view_as(g)

#----------------------------------------------------------------------------
# ODE samplers: `steps` uniform steps from t = 0 to t = 1, deterministic given x0.

def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f'steps must be a positive integer, got {steps!r}')
    return steps


def euler(velocity, x0, steps, cond=None, context=None):
    """x1 from x0 by Euler steps of size 1 / steps."""
    x = x0
    for k in range(_check_steps(steps)):
        x = x + velocity_at(velocity, x, k / steps, cond, context) / steps
    return x


def heun(velocity, x0, steps, cond=None, context=None):
    """x1 from x0 by Heun steps (an Euler guess, then the mean of the slopes at both ends): two velocity passes a step."""
    x = x0
    for k in range(_check_steps(steps)):
        slope = velocity_at(velocity, x, k / steps, cond, context)
        guess = x + slope / steps
        x = x + (slope + velocity_at(velocity, guess, (k + 1) / steps, cond, context)) / (2 * steps)
    return x


SAMPLERS = {'euler': euler, 'heun': heun}


def check_sampler(sampler):
    if not isinstance(sampler, str) or sampler not in SAMPLERS:     # A damaged checkpoint's may be a dict or a list.
        shown = repr(sampler) if isinstance(sampler, str) else f'a {type(sampler).__name__}'
        raise ValueError(f'unknown sampler {shown[:80]}; use one of {", ".join(SAMPLERS)}')
    return sampler

#----------------------------------------------------------------------------
# Noise. Each sample's x0 at each stage comes from its own CPU generator seeded by noise_seed(seed, stage), so an
# id has the same noise in any batch and on any device. The condition does not enter: c00-seed000005 and
# c01-seed000005 start from the same noise (a condition sweep of one seed).

def noise_seed(seed, stage):
    """The seed of sample `seed`'s noise at stage index `stage` (banks record it in meta.json "noise_seeds")."""
    if int(seed) < 0 or int(stage) < 0:
        raise ValueError(f'seeds and stage indices must be non-negative, got seed {seed}, stage {stage}')
    return int(np.random.SeedSequence([int(seed), int(stage)]).generate_state(1, dtype=np.uint64)[0])


class FlowStage:
    """One stage of a pipeline: a velocity model over the stage's data x, the prior of x0, the hand-off to the next
    stage (decode) and the way back from a finished asset (encode). Subclasses define data_shape, decode and encode."""

    name = 'stage'                  # Recorded in bank settings.

    def __init__(self,
        velocity,                   # v(x_t, t [N], cond [N] or None, context) -> like x_t (reference() copies a module).
    ):
        if not callable(velocity):
            raise ValueError(f'{type(self).__name__}: the velocity model must be callable, got {type(velocity).__name__}')
        self.velocity = velocity

    def data_shape(self, context):
        """Shape of one sample's x (the batch adds a leading axis) given the batch's context (None at the first stage)."""
        raise NotImplementedError

    def prior(self, shape, generator):
        """One sample's x0 [*shape] drawn with a CPU torch.Generator; standard normal by default."""
        return torch.randn(shape, generator=generator)

    def decode(self, x1, context):
        """The next stage's context from this stage's data x1 [N, *data_shape] (may be non-differentiable: thresholds,
        sparsification). The last stage's is raw sigma [N, R, R, R], (x, y, z) order, on CubeGrid(R, cube_length)'s
        points: world y up, the face toward +z, level 10 at the surface."""
        raise NotImplementedError

    def encode(self, asset, context):
        """This stage's data x1 [N, *data_shape] of finished assets (raw sigma [N, R, R, R] as the last decode gives
        it), given the context the decodes of the earlier stages' encodings give."""
        raise NotImplementedError


@dataclasses.dataclass
class StageRun:
    """One stage's part of a batch of samples: what MSE_t(x0, x1) needs."""
    x0:             torch.Tensor    # Noise [N, *data_shape] from the noise seeds.
    x1:             torch.Tensor    # Data [N, *data_shape]: the ODE's end, or an asset's encoding.
    context:        object          # What the stage was conditioned on: the previous decode (None at the first stage).
    noise_seeds:    list            # noise_seed(seed, stage) of each sample.


@dataclasses.dataclass
class FlowSample:
    """A batch drawn by FlowPipeline.sample."""
    sigma:          torch.Tensor    # Raw sigma [N, R, R, R] of the last decode.
    runs:           list            # StageRun of each stage, first to last.


def one_of(sample, k):
    """FlowSample of sample k of a batch (tensor contexts sliced, others shared)."""
    part = lambda x: x[k : k + 1] if torch.is_tensor(x) else x
    return FlowSample(sample.sigma[k : k + 1], [StageRun(r.x0[k : k + 1], r.x1[k : k + 1], part(r.context),
        r.noise_seeds[k : k + 1]) for r in sample.runs])


def check_sigma(sigma, n=None, source="the last stage's decode"):
    """Raw sigma volumes [n, R, R, R] (floating point, R >= 2; n None = any), or ValueError naming what came instead."""
    expected = f'{source} must be raw sigma [{"N" if n is None else n}, R, R, R]'
    if not torch.is_tensor(sigma) or not sigma.is_floating_point():
        got = sigma.dtype if torch.is_tensor(sigma) else type(sigma).__name__
        raise ValueError(f'{expected} (a floating-point tensor), got {got}')
    shape = list(sigma.shape)
    if len(shape) != 4 or (n is not None and shape[0] != n) or shape[1] < 2 or not shape[1] == shape[2] == shape[3]:
        raise ValueError(f'{expected}, got shape {shape}')
    return sigma


class FlowPipeline:
    """An ordered list of stages; each stage's decode is the next one's context, the last decode is raw sigma."""

    def __init__(self,
        stages,                     # FlowStage list, first to last.
        conditions  = None,         # Number of condition values (ids c00-seed..., c01-...); None = unconditional.
        name        = 'flow',       # Recorded in bank settings.
    ):
        self.stages = list(stages)
        if not self.stages or not all(isinstance(s, FlowStage) for s in self.stages):
            raise ValueError('a flow pipeline needs a non-empty list of FlowStage')
        if conditions is not None and (isinstance(conditions, bool) or not isinstance(conditions, int) or conditions < 1):
            raise ValueError(f'conditions must be a positive integer or None, got {conditions!r}')
        self.conditions, self.name = conditions, str(name)

    def modules(self):
        """The velocity models that are torch modules."""
        return [s.velocity for s in self.stages if isinstance(s.velocity, torch.nn.Module)]

    @property
    def device(self):
        params = [p for m in self.modules() for p in m.parameters()]
        return params[0].device if params else torch.device('cpu')

    def frozen_copy(self):
        """A deep copy whose velocity models are in eval mode without gradients."""
        other = copy.deepcopy(self)
        for m in other.modules():
            m.eval().requires_grad_(False)
        return other

    def check_condition(self, condition):
        if self.conditions is None:
            if condition is not None:
                raise ValueError(f'flow pipeline {self.name!r} is unconditional; give no condition (got {condition!r})')
        elif (isinstance(condition, bool) or not isinstance(condition, (int, np.integer))
                or not 0 <= condition < self.conditions):
            raise ValueError(f'flow pipeline {self.name!r} needs a condition in 0..{self.conditions - 1}, '
                f'got {condition!r}')
        return condition

    def condition_tensor(self, condition, n):
        """cond [n] int64 of a batch drawn with one condition (None when unconditional)."""
        if self.check_condition(condition) is None:
            return None
        return torch.full([n], int(condition), dtype=torch.int64, device=self.device)

    def noise(self, seeds, index, context):
        """x0 [len(seeds), *data_shape] of stage `index`: each sample's from its own generator (noise_seed)."""
        stage = self.stages[index]
        shape = tuple(stage.data_shape(context))
        x0 = torch.stack([stage.prior(shape, torch.Generator().manual_seed(noise_seed(s, index))) for s in seeds])
        misc.assert_shape(x0, [len(seeds), *shape])
        return x0.to(self.device, torch.float32)

    def run_stage(self, index, seeds, cond, context, steps=16, sampler='heun', velocity=None):
        """StageRun of stage `index` for seeds: its noise carried to data by the sampler (with `velocity` in place of
        the stage's own, if given)."""
        x0 = self.noise(seeds, index, context)
        x1 = SAMPLERS[check_sampler(sampler)](velocity or self.stages[index].velocity, x0, steps, cond, context)
        return StageRun(x0, x1, context, [noise_seed(s, index) for s in seeds])

    def sample(self, seeds, condition=None, steps=16, sampler='heun', guide=None):
        """FlowSample of seeds drawn with one condition, every stage in turn. The velocity models see the whole
        batch, so a sample's last bits may depend on its batch mates (matrix kernels block by batch size) unless
        run inside batch_invariant(); FlowGenerator draws one id at a time by default. guide(index, stage) may
        return a velocity to use instead of the stage's own (reward guidance, eg3d_rlhf/guidance/flow_guidance.py),
        or None."""
        seeds = [int(s) for s in seeds]
        cond = self.condition_tensor(condition, len(seeds))
        check_sampler(sampler)
        context, runs = None, []
        for index, stage in enumerate(self.stages):
            velocity = None if guide is None else guide(index, stage)
            runs.append(self.run_stage(index, seeds, cond, context, steps, sampler, velocity))
            context = stage.decode(runs[-1].x1, context)
        return FlowSample(check_sigma(context, len(seeds)), runs)

    def runs_from_asset(self, seeds, sigma):
        """Each stage's StageRun of finished assets of seeds (raw sigma [N, R, R, R]) without sampling: x1 by encode,
        contexts by decoding the encodings in turn, x0 from the seeds' noise; what MSE_t needs to compare models."""
        seeds = [int(s) for s in seeds]
        sigma = check_sigma(sigma, len(seeds), source='the asset')
        context, runs = None, []
        for index, stage in enumerate(self.stages):
            x0 = self.noise(seeds, index, context)
            x1 = stage.encode(sigma, context)
            misc.assert_shape(x1, list(x0.shape))
            runs.append(StageRun(x0, x1, context, [noise_seed(s, index) for s in seeds]))
            context = stage.decode(x1, context)
        return runs

#----------------------------------------------------------------------------

class VolumeField(SigmaField):
    """Raw sigma volumes [N, R, R, R] ((x, y, z) order, on CubeGrid(R, cube_length)'s points) read at any world points
    by trilinear interpolation, and `empty` outside the box."""

    def __init__(self,
        volumes,                    # Raw sigma [N, R, R, R], (x, y, z) order.
        cube_length     = 1.0,      # Side of the box; the volume's first and last points lie on its faces.
        empty           = -10.0,    # Raw sigma outside the box.
        requires_grad   = False,    # Does sigma keep the volumes' autograd graph?
    ):
        check_sigma(volumes, source='VolumeField volumes')
        self.volumes, self.cube_length, self.empty = volumes, float(cube_length), float(empty)
        self.batch_size, self.device, self.requires_grad = volumes.shape[0], volumes.device, bool(requires_grad)
        self._data = volumes.permute(0, 3, 2, 1).unsqueeze(1)    # [N, 1, D=z, H=y, W=x]: grid_sample's layout.

    def decode(self, coords):
        misc.assert_shape(coords, [self.batch_size, None, 3])
        unit = coords.to(self._data.dtype) / (self.cube_length / 2)       # [-1, 1] across the box, (x, y, z) last.
        values = F.grid_sample(self._data, unit[:, None, None], mode='bilinear', padding_mode='border', align_corners=True)
        inside = (unit.abs() <= 1 + 1e-5).all(dim=-1)                    # Tolerates the last grid point's rounding.
        return torch.where(inside, values[:, 0, 0, 0], self.empty).unsqueeze(-1)

#----------------------------------------------------------------------------

class FlowGenerator(Generator3D):
    """A FlowPipeline as a Generator3D: ids c%02d-seed%06d (seed%06d unconditional), sigma read from the last
    decode's volume, a shaded front view of its level surface as the picture."""

    kind = 'flow'

    def __init__(self,
        pipeline,                   # FlowPipeline.
        cube_length     = 1.0,      # Side of the box the last decode's volume spans.
        steps           = 16,       # ODE steps per stage.
        sampler         = 'heun',   # 'euler' or 'heun'.
        empty_sigma     = -10.0,    # Raw sigma outside the volume.
        image_res       = 128,      # Size of images(): the shaded front view of the level surface.
        level           = 10.0,     # Raw sigma of the surface drawn by images().
        path            = None,     # The file the pipeline came from (its identity in bank metadata), None = in memory.
        batch           = 8,        # Seeds per sigma_grid() pass.
        keep            = 16,       # Drawn samples kept for reuse (samples(), volumes()).
        draw_batch      = 1,        # Uncached ids of one condition per pipeline pass: 1 = each alone (bit-exact per id);
                                    # more is faster, but a sample's last bits may then depend on its batch mates
                                    # (unless invariant).
        invariant       = False,    # Draw in batch_invariant() passes (every stage's velocity must declare
                                    # batch_invariant): an unguided id's bits are then the same in any batch and alone,
                                    # and draw_batch only sets the speed; they differ from plain passes' by rounding.
        config          = None,     # The checkpoint config the pipeline was built from (flow_heads), kept so a snapshot
                                    # can be saved in the same format (registry's flow family); None = built in memory.
    ):
        if not isinstance(pipeline, FlowPipeline):
            raise ValueError(f'FlowGenerator wraps a FlowPipeline, got {type(pipeline).__name__}')
        if not cube_length > 0:
            raise ValueError(f'cube_length must be positive, got {cube_length!r}')
        if isinstance(image_res, bool) or not isinstance(image_res, int) or image_res < 2:
            raise ValueError(f'image_res must be an integer >= 2, got {image_res!r}')
        self.pipeline, self.path = pipeline, path
        self.cube_length, self.steps, self.sampler = float(cube_length), _check_steps(steps), check_sampler(sampler)
        self.empty_sigma, self.image_res, self.level, self.batch = float(empty_sigma), image_res, float(level), int(batch)
        if isinstance(draw_batch, bool) or not isinstance(draw_batch, int) or draw_batch < 1:
            raise ValueError(f'draw_batch must be a positive integer, got {draw_batch!r}')
        self.keep, self.draw_batch, self._cache = max(int(keep), draw_batch), draw_batch, {}
        lacking = [s.name for s in pipeline.stages if not getattr(s.velocity, 'batch_invariant', False)]
        if invariant and lacking:
            raise ValueError(f'invariant draws need batch-invariant velocity models; stages {lacking} lack them')
        self.invariant = bool(invariant)
        self.config = config
        self.guide = None           # pipeline.sample's guide: set by with_guide(), which makes a guided copy.

    @property
    def device(self):
        return self.pipeline.device

    @property
    def conditions(self):
        return self.pipeline.conditions

    def settings(self):
        p = self.pipeline
        return dict(generator=self.kind, pipeline=p.name, stages=[s.name for s in p.stages], conditions=p.conditions,
            steps=self.steps, sampler=self.sampler, cube_length=self.cube_length, empty_sigma=self.empty_sigma,
            noise='x0 per sample and stage: the stage prior drawn with torch.Generator().manual_seed(noise_seed)',
            picture=dict(view='front', level=self.level, resolution=self.image_res),
            **(dict(passes='batch-invariant') if self.invariant else
               dict(draw_batch=self.draw_batch) if self.draw_batch != 1 else {}))

    def sample_meta(self, seed, condition=None):
        meta = super().sample_meta(seed, self.pipeline.check_condition(condition))
        meta['noise_seeds'] = [noise_seed(seed, index) for index in range(len(self.pipeline.stages))]
        meta['asset'] = 'asset.npz: raw sigma of the last decode, float32, (x, y, z) order (runs_from_asset reads it)'
        return meta

    def sample_arrays(self, seed, condition=None):
        return dict(asset=self.volumes([seed], condition)[0].cpu().numpy().astype(np.float32))

    def pass_context(self):
        """The context of every pipeline pass it draws: batch_invariant() when invariant."""
        return batch_invariant() if self.invariant else contextlib.nullcontext()

    def draw(self, seeds, condition=None, requires_grad=False):
        """[FlowSample of one id] of seeds, one pipeline pass per id (so its bits never depend on the batch; those of
        samples() when invariant)."""
        self.pipeline.check_condition(condition)
        if not len(seeds):
            raise ValueError('no seeds to draw')
        with torch.set_grad_enabled(requires_grad), self.pass_context():
            return [self.pipeline.sample([int(seed)], condition, self.steps, self.sampler, self.guide) for seed in seeds]

    def samples(self, seeds, condition=None):
        """[FlowSample of one id] of seeds without gradients, each distinct seed drawn once (draw_batch uncached ids
        per pass, batch-invariantly if invariant). The last `keep` ids drawn are kept until the weights change, so a
        bank's picture, slab and asset, or evaluate's reward, picture and structure, share one draw."""
        seeds = [int(s) for s in seeds]
        self.pipeline.check_condition(condition)
        version = tuple(p._version for m in self.pipeline.modules() for p in m.parameters())
        if self._cache.get('version') != version:
            self._cache = dict(version=version, samples={})
        kept, found = self._cache['samples'], {}
        missing = [s for s in dict.fromkeys(seeds) if (s, condition) not in kept]
        for start in range(0, len(missing), self.draw_batch):
            chunk = missing[start : start + self.draw_batch]
            with torch.no_grad(), self.pass_context():
                batch = self.pipeline.sample(chunk, condition, self.steps, self.sampler, self.guide)
            found.update((seed, one_of(batch, k)) for k, seed in enumerate(chunk))
        for seed in dict.fromkeys(seeds):
            key = (seed, condition)
            found[seed] = found[seed] if seed in found else kept.pop(key)
            kept.pop(key, None)
            kept[key] = found[seed]                                     # Now the most recent.
            while len(kept) > self.keep:
                kept.pop(next(iter(kept)))
        return [found[s] for s in seeds]

    def volumes(self, seeds, condition=None, requires_grad=False):
        """Raw sigma [len(seeds), R, R, R] of the last decode, each distinct seed drawn once (kept as samples() keeps
        them when there are no gradients)."""
        seeds = [int(s) for s in seeds]
        if requires_grad:
            unique = list(dict.fromkeys(seeds))
            drawn = dict(zip(unique, (sample.sigma[0] for sample in self.draw(unique, condition, True))))
            return torch.stack([drawn[s] for s in seeds])
        return torch.stack([sample.sigma[0] for sample in self.samples(seeds, condition)])

    def render(self, volumes):
        """images() of raw sigma volumes [N, R, R, R]: shaded front views of the level surface."""
        volumes = volumes.detach().cpu().numpy()
        grid = CubeGrid(volumes.shape[1], self.cube_length)
        grey = np.stack([render_surface(v, grid, level=self.level, resolution=self.image_res) for v in volumes])
        images = (torch.from_numpy(grey)[:, None] * 2 - 1).repeat(1, 3, 1, 1)
        misc.assert_shape(images, [len(volumes), 3, self.image_res, self.image_res])
        return images

    def field(self, seeds, condition=None, requires_grad=False):
        volumes = self.volumes(seeds, condition, requires_grad)
        return VolumeField(volumes, self.cube_length, self.empty_sigma, requires_grad)

    def images(self, seeds, condition=None):
        return self.render(self.volumes(seeds, condition))

    def with_guide(self, guide, name):
        """A copy drawing through pipeline.sample's `guide` (sharing the pipeline, with its own cache); `name` says
        how it differs in identity() (bank and report metadata)."""
        other = copy.copy(self)
        other.guide, other._cache, other.guide_name = guide, {}, str(name)
        return other

    def identity(self):
        found = super().identity()
        if self.guide is not None:
            found['guidance'] = self.guide_name
        return found

    def reference(self):
        return FlowGenerator(self.pipeline.frozen_copy(), cube_length=self.cube_length, steps=self.steps,
            sampler=self.sampler, empty_sigma=self.empty_sigma, image_res=self.image_res, level=self.level,
            path=self.path, batch=self.batch, keep=self.keep, draw_batch=self.draw_batch, invariant=self.invariant,
            config=self.config)

    def with_pipeline(self, pipeline, keep=None, draw_batch=None):
        """A FlowGenerator like this one (its box, ODE steps, sampler, passes, pictures and config) around another
        pipeline, kept in memory (no path): a tuned copy that the family can save. keep and draw_batch default to this
        one's."""
        draw_batch = self.draw_batch if draw_batch is None else draw_batch
        keep = self.keep if keep is None else keep
        return FlowGenerator(pipeline, cube_length=self.cube_length, steps=self.steps, sampler=self.sampler,
            empty_sigma=self.empty_sigma, image_res=self.image_res, level=self.level, batch=self.batch,
            keep=max(keep, draw_batch), draw_batch=draw_batch, invariant=self.invariant, config=self.config)

#----------------------------------------------------------------------------
