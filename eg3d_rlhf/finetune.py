"""Reward fine-tuning terms: the reward of G's slab sigma (clipped or standardised) and density consistency to a frozen G."""

import copy

import torch

from eg3d_rlhf.bank import grid_from_meta
from eg3d_rlhf.rewards.checkpoint import load_reward
from eg3d_rlhf.sigma import SigmaField, normalise_sigma_self
from torch_utils import misc

#----------------------------------------------------------------------------
# The spine: G (ws) -> SigmaField over the reward model's slab grid, with gradients -> normalise_sigma_self ->
# reward_model.score -> -lambda_r * clip(r, -clip, clip). The slab grid and normalisation come from the reward
# checkpoint (eg3d_rlhf.rewards.checkpoint), so the generator is scored exactly as the reward model was trained.

LOSS_MODES = ('clip', 'standardised')


class RewardTerm:
    def __init__(self,
        reward_model,               # A reward model (score(x) -> [N]) in eval mode; its weights are frozen here.
        slab,                       # The checkpoint's input slab description (info['input']['slab']).
        mode        = 'clip',       # 'clip': -clip(r); 'standardised': -clip((r - running mean) / running std).
        clip        = 10.0,         # Rewards are clipped to [-clip, clip] before they enter the loss.
        momentum    = 0.99,         # Running mean/std update rate for 'standardised' (Ziegler et al.).
        chunk       = 2**16,        # Points decoded at once while sampling the slab with gradients.
    ):
        if mode not in LOSS_MODES:
            raise ValueError(f'unknown reward loss {mode!r}; use one of {", ".join(LOSS_MODES)}')
        self.model = reward_model.eval().requires_grad_(False)
        self.grid = grid_from_meta(slab)
        self.mode, self.clip, self.momentum, self.chunk = mode, float(clip), float(momentum), int(chunk)
        self.mean, self.var, self.count = 0.0, 1.0, 0

    def slab_sigma(self, G, ws):
        """Raw sigma [N, X, Y, Z] of G's slab for latents ws, differentiable with respect to G's weights and ws."""
        if abs(G.rendering_kwargs['box_warp'] - self.grid.cube_length) > 1e-6:
            raise ValueError(f'the reward model was trained on a cube of side {self.grid.cube_length}, '
                f'but G has box_warp {G.rendering_kwargs["box_warp"]}')
        return SigmaField(G, ws, requires_grad=True).sample_grid(self.grid, chunk=self.chunk)

    def rewards(self, G, ws):
        """Rewards [N] of G's slabs, with gradients."""
        sigma = self.slab_sigma(G, ws)
        misc.assert_shape(sigma, [ws.shape[0], *self.grid.shape])
        return self.model.score(normalise_sigma_self(sigma))

    def update_statistics(self, r):
        """Fold a batch of detached rewards into the running mean and variance (first batch: taken as is)."""
        r = r.detach().double()
        mean, var = float(r.mean()), float(r.var(unbiased=False)) if len(r) > 1 else 0.0
        if self.count == 0:
            self.mean, self.var = mean, max(var, 1e-8)
        else:
            self.mean = self.momentum * self.mean + (1 - self.momentum) * mean
            self.var = self.momentum * self.var + (1 - self.momentum) * var
        self.count += 1

    def loss(self, r):
        """The generator's reward loss from rewards [N] (to be multiplied by lambda_r): -mean of the clipped signal."""
        if self.mode == 'standardised':
            self.update_statistics(r)
            r = (r - self.mean) / max(self.var, 1e-8) ** 0.5
        return -r.clamp(-self.clip, self.clip).mean()

#----------------------------------------------------------------------------

class DensityConsistency:
    """L1 between G's raw sigma and a frozen reference generator's at slab points (and optionally random box points)."""

    def __init__(self,
        G_ref,                      # Frozen copy of the starting G_ema.
        slab,                       # Slab description (meta.json / checkpoint "slab"): where the points are drawn.
        num_points  = 4096,         # Slab points per sample per call (drawn at random from the slab grid).
        box_points  = 0,            # Extra points drawn uniformly in the whole box.
    ):
        self.G_ref = G_ref.eval().requires_grad_(False)
        self.grid = grid_from_meta(slab)
        self.num_points, self.box_points = int(num_points), int(box_points)

    def points(self, generator=None, device='cpu'):
        """World points [num_points + box_points, 3]: random slab grid points, then random points in the box."""
        parts = [self.grid.points_at(torch.randint(self.grid.num_points, [self.num_points], generator=generator))]
        if self.box_points:
            half = self.grid.cube_length / 2
            parts.append(torch.rand([self.box_points, 3], generator=generator) * 2 * half - half)
        return torch.cat(parts).to(device)

    def loss(self, G, z, c, truncation_psi=1, generator=None, ws=None):
        """Mean |sigma_G - sigma_ref| at fresh points for latents z [N, z_dim] and conditioning c [N, c_dim].

        ws: G's mapping of (z, c) when the caller already has it; computed here otherwise.
        """
        device = next(G.parameters()).device
        coords = self.points(generator, device)
        ws = G.mapping(z, c, truncation_psi=truncation_psi) if ws is None else ws
        with torch.no_grad():
            ws_ref = self.G_ref.mapping(z, c, truncation_psi=truncation_psi)
            target = SigmaField(self.G_ref, ws_ref).sample(coords)
        sigma = SigmaField(G, ws, requires_grad=True).sample(coords)
        return (sigma - target).abs().mean()

#----------------------------------------------------------------------------

class RewardPhase:
    """The generator's extra phase: lambda_r * reward loss + lambda_sigma * density consistency, for a batch of z, c."""

    def __init__(self,
        G,                          # The generator being tuned; a frozen copy of it becomes the consistency reference.
        reward_model_path,          # Checkpoint written by tools/train_reward.py (read with weights_only=True).
        lambda_r        = 10.0,     # Weight of the reward loss.
        lambda_sigma    = 0.01,     # Weight of the density-consistency L1.
        mode            = 'clip',   # RewardTerm mode: 'clip' or 'standardised'.
        clip            = 10.0,     # Rewards are clipped to [-clip, clip].
        sigma_points    = 4096,     # Slab points per sample for the consistency term.
        box_points      = 0,        # Extra random box points for the consistency term.
    ):
        device = next(G.parameters()).device
        model, info = load_reward(reward_model_path, device)
        slab = info['input']['slab']
        self.lambda_r, self.lambda_sigma = float(lambda_r), float(lambda_sigma)
        self.reward = RewardTerm(model, slab, mode=mode, clip=clip)
        G_ref = copy.deepcopy(G).eval().requires_grad_(False)
        self.consistency = DensityConsistency(G_ref, slab, num_points=sigma_points, box_points=box_points)

    def loss(self, G, z, c):
        """(total loss, {name: detached value}) for latents z [N, z_dim] conditioned on c [N, c_dim]."""
        ws = G.mapping(z, c)                                            # Shared by both terms.
        r = self.reward.rewards(G, ws)
        reward_loss = self.reward.loss(r)
        total = self.lambda_r * reward_loss
        parts = dict(reward=r.detach(), reward_loss=reward_loss.detach())
        if self.lambda_sigma > 0:
            consistency = self.consistency.loss(G, z, c, ws=ws)
            total = total + self.lambda_sigma * consistency
            parts['density_consistency'] = consistency.detach()
        return total, parts

#----------------------------------------------------------------------------
