"""Reward-guided EG3D inversion: ws (and, pivotal-tuning style, a copy of G) fit to a target image while a reward shapes it."""

import copy
import dataclasses
import math

import torch

from eg3d_rlhf.finetune.reward_phase import RewardTerm, check_finite
from eg3d_rlhf.generators.eg3d import TriPlaneField
from torch_utils import misc

#----------------------------------------------------------------------------
# The loss of a batch is the sum of its samples' losses, so each sample's ws get their own gradient:
#   MSE(render(ws), target) - reward_weight * clip(r(slab of ws), -clip, clip) + sigma_weight * mean |sigma - sigma_0|
# render() pins the renderer's stratified ray samples, so the image term is a fixed function of ws. r is the reward
# of the slab sampled with gradients and scored through the reward's contract (finetune.RewardTerm, as fine-tuning
# scores G); sigma_0 is the input G at ws_init, read at fresh random points of the reward's slab grid each step.
# Adam moves the ws for `steps`; then, with ws fixed, a deep copy of G for `tune_steps` (the same loss).

SPACES = ('w', 'w+')
RENDER_SEED = 0                 # torch's seed for each sample's stratified ray samples in render().


def fork_rng(device):
    """torch.random.fork_rng of the CPU stream and, on a GPU, of `device`'s stream."""
    return torch.random.fork_rng(devices=[device] if device.type == 'cuda' else [])


def render_field(field, camera, resolution=None):
    """Raw images [N, 3, r, r] of a TriPlaneField's planes seen from cameras [N, 25], each sample rendered with the
    ray samples of torch.manual_seed(RENDER_SEED) (G.synthesis' 'image_raw', without the super-resolution pass)."""
    G, n = field.G, field.batch_size
    misc.assert_shape(camera, [n, 25])
    r = int(resolution or G.neural_rendering_resolution)
    camera = camera.to(field.device, torch.float32)
    origins, directions = G.ray_sampler(camera[:, :16].view(-1, 4, 4), camera[:, 16:25].view(-1, 3, 3), r)
    images = []
    for i in range(n):
        with fork_rng(field.device):
            torch.manual_seed(RENDER_SEED)
            features, _depth, _weights = G.renderer(field.planes[i : i + 1], G.decoder, origins[i : i + 1],
                directions[i : i + 1], G.rendering_kwargs)
        images.append(features[..., :3].permute(0, 2, 1).reshape(1, 3, r, r))
    return torch.cat(images)


def render(generator, ws, camera, resolution=None):
    """Raw images [N, 3, r, r] of ws [N, num_ws, w_dim] seen from cameras [N, 25], neural rendering at `resolution`
    (None = G's own), differentiable. The renderer draws stratified ray samples (torch.rand_like, torch.rand): each
    sample renders inside torch.random.fork_rng after torch.manual_seed(RENDER_SEED), so the same ws and camera give
    the same image in any batch, and the caller's random streams are left as they were. G is not changed (G.synthesis
    would keep `resolution` as its new default)."""
    field = TriPlaneField(generator.G, ws, requires_grad=torch.is_grad_enabled())
    return render_field(field, camera.to(generator.device), resolution)


def as_cameras(camera, n, device):
    """Cameras [n, 25] (a copy) from one camera [25] or [1, 25], or n of them [n, 25]."""
    camera = torch.as_tensor(camera, dtype=torch.float32, device=device)
    if camera.ndim == 1:
        check_shape('camera', camera, [25])
        camera = camera[None]
    check_shape('camera', camera, [1 if len(camera) == 1 else n, 25])
    return camera.expand(n, -1).clone()


def seed_target(generator, seeds, camera=None, resolution=None):
    """(targets [N, 3, r, r], cameras [N, 25], ws [N, num_ws, w_dim]) of seeds: their ws (seed_ws, with the generator's
    truncation) rendered by render() from `camera` ([25], or [N, 25]; None = the frontal conditioning camera)."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError('seed_target needs at least one seed')
    ws = generator.seed_ws(seeds)
    cameras = as_cameras(generator.camera() if camera is None else camera, len(seeds), generator.device)
    with torch.no_grad():
        target = render(generator, ws, cameras, resolution)
    return target, cameras, ws

#----------------------------------------------------------------------------
# Argument checks: one-line ValueErrors.

def check_shape(name, tensor, shape):
    if not torch.is_tensor(tensor):
        raise ValueError(f'{name} must be a tensor, got {type(tensor).__name__}')
    try:
        misc.assert_shape(tensor, shape)
    except AssertionError as err:
        want = ', '.join('*' if s is None else str(s) for s in shape)
        raise ValueError(f'{name} has shape {list(tensor.shape)}, expected [{want}] ({err})') from None


def check_number(name, value, positive=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (positive and value == 0):
        raise ValueError(f'{name} must be a finite number {"> 0" if positive else ">= 0"}, got {value!r}')


def check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f'{name} must be a whole number >= 0, got {value!r}')

#----------------------------------------------------------------------------

def detached(field):
    """A view of a field without gradients (its planes detached), for values only logged."""
    out = copy.copy(field)
    out.planes, out.requires_grad = field.planes.detach(), False
    return out


class Objective:
    """The inversion loss of a batch: per sample image MSE - reward_weight * clipped reward + sigma_weight * density L1."""

    def __init__(self,
        generator,                  # EG3DGenerator whose G (never tuned here) holds sigma_0 at ws_init.
        target,                     # Target raw images [N, 3, r, r].
        camera,                     # Their cameras [N, 25].
        ws_init,                    # Starting latents [N, num_ws, w_dim]: sigma_0's latents.
        reward          = None,     # contract.Reward, or None.
        reward_weight   = 0.0,      # Weight of the clipped reward (0: scored under no_grad for the history only).
        sigma_weight    = 0.0,      # Weight of the density L1 to sigma_0 (0: not computed).
        resolution      = None,     # Neural rendering resolution (None = G's own).
        clip            = 10.0,     # Rewards are clipped to [-clip, clip] before they enter the loss.
        sigma_points    = 4096,     # Slab grid points per step for the density term.
        seed            = 0,        # Seed of the density term's point draws.
    ):
        self.target, self.camera, self.resolution = target, camera, resolution
        self.reward_weight, self.sigma_weight, self.clip = float(reward_weight), float(sigma_weight), float(clip)
        self.term = None if reward is None else RewardTerm(reward, clip=clip)
        if self.term is not None:
            self.term.check_box(generator)
        if self.sigma_weight > 0:
            self.grid, self.sigma_points = self.term.grid, int(sigma_points)
            self.frozen = TriPlaneField(generator.G, ws_init)
            self.rng = torch.Generator().manual_seed(int(seed))

    def rewards(self, field):
        """Rewards [N] of the field's slabs: with gradients when they enter the loss, else without (or None)."""
        if self.term is None:
            return None
        if self.reward_weight > 0:
            return check_finite(self.term.rewards(field))
        with torch.no_grad():
            return self.term.rewards(detached(field))

    def sigma_loss(self, field):
        """Per-sample mean |sigma - sigma_0| [N] at fresh random points of the slab grid."""
        pos = torch.randint(self.grid.num_points, [self.sigma_points], generator=self.rng)
        coords = self.grid.points_at(pos).to(field.device)
        with torch.no_grad():
            sigma_0 = self.frozen.sample(coords)
        return (field.sample(coords) - sigma_0).abs().mean(dim=(1, 2))

    def __call__(self, G, ws):
        """(summed loss, {image_loss, reward, sigma_loss, loss}: batch means as floats, None when not computed)."""
        field = TriPlaneField(G, ws, requires_grad=torch.is_grad_enabled())
        image_loss = (render_field(field, self.camera, self.resolution) - self.target).square().mean(dim=(1, 2, 3))
        loss, r, sigma_loss = image_loss, self.rewards(field), None
        if r is not None and self.reward_weight > 0:
            loss = loss - self.reward_weight * r.clamp(-self.clip, self.clip)
        if self.sigma_weight > 0:
            sigma_loss = self.sigma_loss(field)
            loss = loss + self.sigma_weight * sigma_loss
        mean = lambda x: None if x is None else float(x.detach().mean())
        return loss.sum(), dict(image_loss=mean(image_loss), reward=mean(r), sigma_loss=mean(sigma_loss), loss=mean(loss))

#----------------------------------------------------------------------------

@dataclasses.dataclass
class InversionResult:
    ws:         torch.Tensor        # Fitted latents [N, num_ws, w_dim], detached.
    generator:  object              # EG3DGenerator whose G renders them: a tuned deep copy when tune_steps > 0, else the input.
    history:    list                # One dict per step: phase ('ws' or 'tune'), step, image_loss, reward, sigma_loss, loss.
    final:      dict                # The same values at the result (ws and G as returned), without phase and step.


def adam(objective, G, params, make_ws, steps, lr, phase, history, progress):
    """`steps` Adam steps on params (leaf tensors) of objective(G, make_ws()); other tensors' .grad are left alone."""
    opt = torch.optim.Adam(params, lr=lr)
    for step in range(steps):
        loss, values = objective(G, make_ws())
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        history.append(dict(phase=phase, step=step, **values))
        if progress is not None:
            progress(1)


def invert(generator, target, camera, ws_init,
    reward          = None,         # contract.Reward (the slab grid and the model), or None.
    reward_weight   = 0.0,          # Weight of the clipped reward in the loss.
    sigma_weight    = 0.0,          # Weight of the density L1 to the input G at ws_init (needs a reward's slab grid).
    steps           = 50,           # Adam steps on the ws.
    lr              = 0.01,         # Their learning rate.
    space           = 'w',          # 'w': one w per sample, broadcast to all num_ws rows; 'w+': every row on its own.
    tune_steps      = 0,            # Then Adam steps on a deep copy of G's weights, ws fixed (pivotal tuning).
    tune_lr         = 3e-4,         # Their learning rate.
    resolution      = None,         # Neural rendering resolution of the renders (None = G's own).
    clip            = 10.0,         # Rewards are clipped to [-clip, clip] in the loss.
    progress        = None,         # progress(1) after each step.
    sigma_points    = 4096,         # Slab grid points per step for the density term.
    seed            = 0,            # Seed of the density term's point draws.
):
    """InversionResult of fitting ws_init [N, num_ws, w_dim] (and G's copy) so that render(ws, camera [N, 25]) matches
    target [N, 3, r, r] (raw images, seed_target()'s) while the reward of the sample's slab rises; the input generator
    is never modified."""
    for name, value in dict(steps=steps, tune_steps=tune_steps, sigma_points=sigma_points).items():
        check_count(name, value)
    for name, value in dict(lr=lr, tune_lr=tune_lr, clip=clip).items():
        check_number(name, value, positive=True)
    for name, value in dict(reward_weight=reward_weight, sigma_weight=sigma_weight).items():
        check_number(name, value)
    if space not in SPACES:
        raise ValueError(f'unknown latent space {space!r}; use one of {", ".join(SPACES)}')
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1):
        raise ValueError(f'resolution must be a positive whole number or None, got {resolution!r}')
    if reward is None and (reward_weight > 0 or sigma_weight > 0):
        raise ValueError('reward_weight and sigma_weight need a reward (its slab grid holds the density points)')
    G = generator.G
    r = resolution or G.neural_rendering_resolution
    check_shape('ws_init', ws_init, [None, G.backbone.num_ws, G.w_dim])
    n, device = len(ws_init), generator.device
    check_shape('target', target, [n, 3, r, r])
    check_shape('camera', camera, [n, 25])
    target, camera = target.to(device, torch.float32), camera.to(device, torch.float32)
    ws_init = ws_init.detach().to(device, torch.float32)
    objective = Objective(generator, target, camera, ws_init, reward, reward_weight, sigma_weight, resolution, clip,
        sigma_points, seed)

    history = []
    if space == 'w+':
        w = ws_init.clone().requires_grad_(True)
        make_ws = lambda: w
    else:
        rows_equal = torch.equal(ws_init, ws_init[:, :1].expand_as(ws_init))      # Seeds' ws, truncated alike.
        w = (ws_init[:, :1] if rows_equal else ws_init.mean(dim=1, keepdim=True)).clone().requires_grad_(True)
        make_ws = lambda: w.expand(-1, ws_init.shape[1], -1)
    adam(objective, G, [w], make_ws, steps, lr, 'ws', history, progress)
    ws = make_ws().detach().clone()

    if tune_steps > 0:
        generator = generator.reference()                       # A deep copy; the input G stays as it was.
        G = generator.G.requires_grad_(True)
        adam(objective, G, list(G.parameters()), lambda: ws, tune_steps, tune_lr, 'tune', history, progress)
        G.requires_grad_(False)
    with torch.no_grad():
        _loss, final = objective(G, ws)
    return InversionResult(ws=ws, generator=generator, history=history, final=final)

#----------------------------------------------------------------------------
