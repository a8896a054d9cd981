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

LOSS_MODES = ('clip', 'standardised', 'pairwise')  # 'pairwise' is PairwiseTerm's; RewardTerm does the other two.


class RewardTerm:
    def __init__(self,
        reward_model,               # A reward model (score(x) -> [N]) in eval mode; its weights are frozen here.
        slab,                       # The checkpoint's input slab description (info['input']['slab']).
        mode        = 'clip',       # 'clip': -clip(r); 'standardised': -clip((r - running mean) / running std).
        clip        = 10.0,         # Rewards are clipped to [-clip, clip] before they enter the loss.
        momentum    = 0.99,         # Running mean/std update rate for 'standardised' (Ziegler et al.).
        chunk       = 2**16,        # Points decoded at once while sampling the slab with gradients.
        recompute   = False,        # Gradient checkpointing: recompute each chunk's decoder pass in backward (memory).
    ):
        if mode not in LOSS_MODES:
            raise ValueError(f'unknown reward loss {mode!r}; use one of {", ".join(LOSS_MODES)}')
        self.model = reward_model.eval().requires_grad_(False)
        self.grid = grid_from_meta(slab)
        self.mode, self.clip, self.momentum, self.chunk = mode, float(clip), float(momentum), int(chunk)
        self.recompute = bool(recompute)
        self.mean, self.var, self.count = 0.0, 1.0, 0

    def slab_sigma(self, G, ws):
        """Raw sigma [N, X, Y, Z] of G's slab for latents ws, differentiable with respect to G's weights and ws."""
        if abs(G.rendering_kwargs['box_warp'] - self.grid.cube_length) > 1e-6:
            raise ValueError(f'the reward model was trained on a cube of side {self.grid.cube_length}, '
                f'but G has box_warp {G.rendering_kwargs["box_warp"]}')
        return SigmaField(G, ws, requires_grad=True).sample_grid(self.grid, chunk=self.chunk, recompute=self.recompute)

    def rewards(self, G, ws):
        """Rewards [N] of G's slabs, with gradients."""
        sigma = self.slab_sigma(G, ws)
        misc.assert_shape(sigma, [ws.shape[0], *self.grid.shape])
        return self.model.score(normalise_sigma_self(sigma))

    def score_slabs(self, sigma):
        """Rewards [N] of raw slabs [N, X, Y, Z], without gradients."""
        with torch.no_grad():
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

class PairwiseTerm:
    """DreamDPO's piecewise preference loss, moved from noise predictions to the slab: two nearby samples of each
    latent (z plus small noise) are scored; G's own slab is pulled toward the winner's, and pushed away from the
    loser's only when the reward gap exceeds tau. Pull and push together step along (winner - loser), a finite-
    difference estimate of the reward's ascent direction, so the reward itself is never differentiated."""

    def __init__(self,
        reward,                     # RewardTerm: the slab grid, the box check and the frozen reward model.
        tau         = 0.1,          # Reward gap above which the loser is pushed away as well.
        pair_noise  = 0.3,          # Standard deviation of the z offsets that make the two samples of a pair.
    ):
        self.reward, self.tau, self.pair_noise = reward, float(tau), float(pair_noise)

    def loss(self, G, z, c, ws):
        """(loss, rewards of both samples [2N], fraction of pairs whose gap exceeded tau) for latents z with ws."""
        with torch.no_grad():
            slabs = [SigmaField(G, G.mapping(z + self.pair_noise * torch.randn_like(z), c)).sample_grid(self.reward.grid)
                for _ in range(2)]
            r = [self.reward.score_slabs(x) for x in slabs]
            a_wins = (r[0] >= r[1]).view(-1, 1, 1, 1)
            winner, loser = torch.where(a_wins, slabs[0], slabs[1]), torch.where(a_wins, slabs[1], slabs[0])
            push = ((r[0] - r[1]).abs() > self.tau).to(winner.dtype)
        sigma = self.reward.slab_sigma(G, ws)
        pull_term = (sigma - winner).square().mean(dim=(1, 2, 3))
        push_term = (sigma - loser).square().mean(dim=(1, 2, 3))
        return (pull_term - push * push_term).mean(), torch.cat(r), push.mean()

#----------------------------------------------------------------------------

class RewardPhase:
    """The generator's extra phase: lambda_r * reward loss + lambda_sigma * density consistency (+ lambda_image *
    image consistency), for a batch of latents."""

    def __init__(self,
        G,                          # The generator being tuned.
        reward_model_path,          # Checkpoint written by tools/train_reward.py (read with weights_only=True).
        G_ref           = None,     # Frozen reference (the starting G_ema); None = a copy of G as it is now.
        lambda_r        = 10.0,     # Weight of the reward loss.
        lambda_sigma    = 0.01,     # Weight of the density-consistency L1.
        lambda_image    = 0.0,      # Weight of an L1 between G's and the reference's raw images (same z, camera).
        mode            = 'clip',   # 'clip', 'standardised' (RewardTerm) or 'pairwise' (PairwiseTerm).
        clip            = 10.0,     # Rewards are clipped to [-clip, clip] ('clip' and 'standardised').
        tau             = 0.1,      # 'pairwise': reward gap above which the loser is pushed away.
        batch           = None,     # Latents per pass, None = as many as the training loop hands over.
        sigma_points    = 4096,     # Slab points per sample for the consistency term.
        box_points      = 0,        # Extra random box points for the consistency term.
        recompute       = False,    # Gradient checkpointing of the slab's decoder passes.
        keep_w_avg      = True,     # Stop G's running w_avg update, so truncated seeds keep their centre (below).
    ):
        device = next(G.parameters()).device
        if keep_w_avg:
            # Truncation pulls w toward G's running average w_avg. EG3D keeps updating it while training, so every
            # truncated sample would move with it, tuned or not, and tuned vs original at one seed would compare
            # two centres (the bundled generator's w_avg sits 5.9 from the mean of its mapped w, whose norm is 37).
            G.backbone.mapping.w_avg_beta = None
        model, info = load_reward(reward_model_path, device)
        slab = info['input']['slab']
        self.lambda_r, self.lambda_sigma, self.lambda_image = float(lambda_r), float(lambda_sigma), float(lambda_image)
        self.batch = batch
        self.reward = RewardTerm(model, slab, mode='clip' if mode == 'pairwise' else mode, clip=clip, recompute=recompute)
        self.pairwise = PairwiseTerm(self.reward, tau=tau) if mode == 'pairwise' else None
        self.G_ref = copy.deepcopy(G if G_ref is None else G_ref).to(device).eval().requires_grad_(False)
        self.consistency = DensityConsistency(self.G_ref, slab, num_points=sigma_points, box_points=box_points)

    def latents(self, z, c, camera):
        """(z, c, camera) cut or topped up (fresh z, cameras repeated) to self.batch rows."""
        if self.batch is None or self.batch == len(z):
            return z, c, camera
        rows = torch.arange(self.batch, device=z.device) % len(z)
        fresh = torch.randn([max(self.batch - len(z), 0), z.shape[1]], device=z.device)
        return torch.cat([z, fresh])[:self.batch], c[rows], camera[rows]

    def loss(self, G, z, c, camera=None, neural_rendering_resolution=None):
        """(total loss, {name: detached value}) for latents z [N, z_dim] conditioned on c [N, c_dim]; camera [N, 25]
        and neural_rendering_resolution (None = G's own) are where and how big the image-consistency term renders."""
        z, c, camera = self.latents(z, c, c if camera is None else camera)
        ws = G.mapping(z, c)                                            # Shared by every term.
        parts = {}
        if self.pairwise is not None:
            reward_loss, r, pushed = self.pairwise.loss(G, z, c, ws)
            parts['pushed'] = pushed
        else:
            r = self.reward.rewards(G, ws)
            reward_loss = self.reward.loss(r)
        total = self.lambda_r * reward_loss
        parts.update(reward=r.detach(), reward_loss=reward_loss.detach())
        if self.lambda_sigma > 0:
            consistency = self.consistency.loss(G, z, c, ws=ws)
            total = total + self.lambda_sigma * consistency
            parts['density_consistency'] = consistency.detach()
        if self.lambda_image > 0:
            device = ws.device
            with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
                # The renderer draws stratified ray samples: the reference renders with the same draws as G.
                target = self.G_ref.synthesis(self.G_ref.mapping(z, c), camera, noise_mode='const',
                    neural_rendering_resolution=neural_rendering_resolution or G.neural_rendering_resolution)['image_raw']
            image = G.synthesis(ws, camera, noise_mode='const', neural_rendering_resolution=neural_rendering_resolution)['image_raw']
            image_consistency = (image - target).abs().mean()
            total = total + self.lambda_image * image_consistency
            parts['image_consistency'] = image_consistency.detach()
        return total, parts

#----------------------------------------------------------------------------
