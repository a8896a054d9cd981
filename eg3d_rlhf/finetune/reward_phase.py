"""The GAN reward phase: the reward of G's slab sigma (clipped, standardised or pairwise) plus consistency to a frozen G."""

import torch

from eg3d_rlhf.finetune import losses
from eg3d_rlhf.finetune.config import LOSS_MODES, PAIR_CONSTRUCTIONS, REDUCTIONS, RewardFinetuneConfig
from eg3d_rlhf.finetune.schedules import Progress
from eg3d_rlhf.generators.eg3d import EG3DGenerator, TriPlaneField
from eg3d_rlhf.geometry.sigma import CubeGrid
from eg3d_rlhf.rewards import aggregate
from eg3d_rlhf.rewards.checkpoint import shared_reward
from torch_utils import misc

#----------------------------------------------------------------------------

class NonFiniteReward(FloatingPointError):
    """The reward of a training batch is nan or inf: the run stops (training/training_loop.py keeps what it saved)."""


def check_finite(r):
    """r (a tensor or numpy array), or NonFiniteReward when any reward in it is nan or inf."""
    bad = int((~torch.isfinite(torch.as_tensor(r))).sum())
    if bad:
        raise NonFiniteReward(f'the reward of {bad} of {len(r)} samples is not finite (nan or inf): the generator or '
            'its gradients diverged; lower --lambda-r or the learning rate')
    return r

#----------------------------------------------------------------------------
# The spine: generators/eg3d.py (z -> tri-planes once, a field with gradients) -> geometry/sigma.py (the reward's
# slab grid, streamed in chunks) -> rewards/contract.py (the checkpoint's normalisation, then score) -> here:
# -lambda_r * clip(r, -clip, clip). The grid and normalisation come from the reward checkpoint, so the generator is
# scored exactly as the reward model was trained.

class RewardTerm:
    def __init__(self,
        reward,                     # contract.Reward: the frozen model with its input contract (grid, normalisation).
        mode        = 'clip',       # 'clip': -clip(r); 'standardised': -clip((r - running mean) / running std).
        clip        = 10.0,         # Rewards are clipped to [-clip, clip] before they enter the loss.
        momentum    = 0.99,         # Running mean/std update rate for 'standardised' (Ziegler et al.).
        chunk       = 2**16,        # Points decoded at once while sampling the slab with gradients.
        recompute   = False,        # Gradient checkpointing: recompute each chunk's decoder pass in backward (memory).
    ):
        if mode not in LOSS_MODES:
            raise ValueError(f'unknown reward loss {mode!r}; use one of {", ".join(LOSS_MODES)}')
        reward.model.eval().requires_grad_(False)
        self.reward, self.grid = reward, reward.grid
        self.mode, self.clip, self.momentum, self.chunk = mode, float(clip), float(momentum), int(chunk)
        self.recompute = bool(recompute)
        self.mean, self.var, self.count = 0.0, 1.0, 0

    def check_box(self, generator):
        if abs(generator.cube_length - self.grid.cube_length) > 1e-6:
            raise ValueError(f'the reward model was trained on a cube of side {self.grid.cube_length}, '
                f'but the generator\'s box has side {generator.cube_length}')

    def slab_sigma(self, field):
        """Raw sigma [N, X, Y, Z] of a field's slab, differentiable when the field is."""
        sigma = field.sample_grid(self.grid, chunk=self.chunk, recompute=self.recompute)
        misc.assert_shape(sigma, [field.batch_size, *self.grid.shape])
        return sigma

    def rewards(self, field):
        """Rewards [N] of a field's slabs, with gradients."""
        return self.reward.score(self.slab_sigma(field))

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
    """L1 between a generator's raw sigma and a frozen reference's: at random slab points (and optionally random box
    points), or at every point of a grid over the whole box (the paper's anchor: 64^3, EG3D's create_samples)."""

    def __init__(self,
        reference,                  # Frozen generator (EG3DGenerator.reference() of the starting G_ema).
        grid,                       # Slab CubeGrid: where the random points are drawn.
        num_points  = 4096,         # Slab points per sample per call (drawn at random from the slab grid).
        box_points  = 0,            # Extra points drawn uniformly in the whole box.
        box_grid    = 0,            # N > 0: every point of an N^3 grid over the whole box instead of random points.
        reduce      = 'mean',       # How the samples' mean L1 add up over the batch: 'mean' or 'sum'.
        truncation  = {},           # truncation_psi / truncation_cutoff of the reference's samples (as the field's).
        chunk       = 2**16,        # Points decoded at once on the box grid.
        recompute   = False,        # Gradient checkpointing of the box grid's decoder passes.
    ):
        if reduce not in REDUCTIONS:
            raise ValueError(f'unknown reduction {reduce!r}; use one of {", ".join(REDUCTIONS)}')
        self.reference, self.grid = reference, grid
        self.num_points, self.box_points = int(num_points), int(box_points)
        self.reduce, self.truncation = reduce, dict(truncation)
        self.chunk, self.recompute = int(chunk), bool(recompute)
        self.box_grid = CubeGrid(box_grid, grid.cube_length, exact_eg3d_grid=True) if box_grid else None

    def points(self, generator=None, device='cpu'):
        """World points [num_points + box_points, 3]: random slab grid points, then random points in the box."""
        parts = [self.grid.points_at(torch.randint(self.grid.num_points, [self.num_points], generator=generator))]
        if self.box_points:
            half = self.grid.cube_length / 2
            parts.append(torch.rand([self.box_points, 3], generator=generator) * 2 * half - half)
        return torch.cat(parts).to(device)

    def per_sample(self, field, z, c, generator=None):
        """Mean |sigma - sigma_ref| [N] of each sample of a field of latents z [N, z_dim] with conditioning c [N, c_dim]."""
        reference = self.reference.latent_field(z, c, **self.truncation)
        if self.box_grid is not None:
            sigma = field.sample_grid(self.box_grid, chunk=self.chunk, recompute=self.recompute)
            target = reference.sample_grid(self.box_grid, chunk=self.chunk)
            misc.assert_shape(sigma, [field.batch_size, *self.box_grid.shape])
            return (sigma - target).abs().flatten(1).mean(dim=1)
        coords = self.points(generator, field.device)
        with torch.no_grad():
            target = reference.sample(coords)
        return (field.sample(coords) - target).abs().flatten(1).mean(dim=1)

    def loss(self, field, z, c, generator=None):
        """The batch's density consistency: the samples' mean L1, averaged or summed (self.reduce)."""
        l1 = self.per_sample(field, z, c, generator)
        return l1.sum() if self.reduce == 'sum' else l1.mean()

#----------------------------------------------------------------------------

class PairwiseTerm:
    """DreamDPO's idea moved from noise predictions to the slab: two samples made from each latent (sample_pair:
    z plus small noise, z at two truncations, or two fresh latents) are scored by the reward; the winner's and the
    loser's slabs become a preference pair, and a loss of the registry
    (finetune/losses.py) reads G's own slab against them, each side's quantity being -MSE(G's slab, that side's slab).
    'dreamdpo' (the default) pulls toward the winner and pushes from the loser only when the reward gap exceeds tau:
    together a step along (winner - loser), a finite-difference estimate of the reward's ascent direction, so the
    reward itself is never differentiated. The DPO family compares with the frozen reference's slab as well."""

    def __init__(self,
        reward,                     # RewardTerm: the slab grid and the frozen reward model.
        tau         = 0.1,          # Reward gap above which the loser is pushed away as well (dreamdpo).
        pair_noise  = 0.3,          # Standard deviation of the z offsets that make the two samples of a pair.
        truncation  = {},           # truncation_psi / truncation_cutoff of the two samples (as the tuned field's).
        loss_type   = 'dreamdpo',   # Name of the preference loss in finetune/losses.py.
        beta        = 1.0,          # beta of the DPO-family losses.
        label_smoothing = 0.0,      # Label smoothing of the sigmoid and robust losses.
        reference   = None,         # Frozen generator whose slab the DPO family compares with (needed by those).
        construction = 'latents',   # How the two samples are made: one of config.PAIR_CONSTRUCTIONS (sample_pair).
        psi_step    = 0.2,          # 'truncation': the second sample's psi is the first's minus this.
    ):
        if construction not in PAIR_CONSTRUCTIONS:
            raise ValueError(f'unknown pair construction {construction!r}; use one of {", ".join(PAIR_CONSTRUCTIONS)}')
        self.reward, self.tau, self.pair_noise = reward, float(tau), float(pair_noise)
        self.truncation = dict(truncation)
        self.construction, self.psi_step = construction, float(psi_step)
        psi = self.truncation.get('truncation_psi', 1)
        if construction == 'truncation' and not 0 < self.psi_step <= psi:
            raise ValueError(f'psi_step {self.psi_step:g} must lie in (0, {psi:g}], the samples\' psi')
        self.loss_fn = losses.get(loss_type)
        self.options = losses.LossOptions(beta=float(beta), label_smoothing=float(label_smoothing), tau=self.tau)
        if self.loss_fn.needs_reference and reference is None:
            raise ValueError(f'the {loss_type} loss compares with a frozen reference generator; pass reference')
        self.reference = reference

    def pair_latents(self, z):
        """Yields (latents [N, z_dim], truncation) of the two samples of latents z, as self.construction makes them;
        offsets and latents draw from torch's random state when each sample is made, as the term always has."""
        for i in range(2):
            if self.construction == 'truncation':
                psi = self.truncation.get('truncation_psi', 1) - i * self.psi_step
                yield z, dict(self.truncation, truncation_psi=psi) if i else self.truncation
            elif self.construction == 'latents':
                yield torch.randn_like(z), self.truncation
            else:
                yield z + self.pair_noise * torch.randn_like(z), self.truncation

    def sample_pair(self, generator, z, c):
        """The two slabs [N, *grid] (raw sigma, no gradients) of latents z [N, z_dim] conditioned on c [N, c_dim]."""
        with torch.no_grad():
            slabs = [generator.latent_field(zz, c, **truncation).sample_grid(self.reward.grid)
                for zz, truncation in self.pair_latents(z)]
        for slab in slabs:
            misc.assert_shape(slab, [len(z), *self.reward.grid.shape])
        return slabs

    def loss(self, generator, field, z, c):
        """(loss, rewards of both samples [2N], stats of the loss (means)) for latents z and their field."""
        slabs = self.sample_pair(generator, z, c)
        with torch.no_grad():
            r = [self.reward.reward.score(x) for x in slabs]
            a_wins = (r[0] >= r[1]).view(-1, 1, 1, 1)
            winner, loser = torch.where(a_wins, slabs[0], slabs[1]), torch.where(a_wins, slabs[1], slabs[0])
            gap = (r[0] - r[1]).abs()
            ref_chosen = ref_rejected = None
            if self.loss_fn.needs_reference:
                ref_sigma = self.reference.latent_field(z, c, **self.truncation).sample_grid(self.reward.grid)
                ref_chosen = -(ref_sigma - winner).square().mean(dim=(1, 2, 3))
                ref_rejected = -(ref_sigma - loser).square().mean(dim=(1, 2, 3))
        sigma = self.reward.slab_sigma(field)
        chosen = -(sigma - winner).square().mean(dim=(1, 2, 3))
        rejected = -(sigma - loser).square().mean(dim=(1, 2, 3)) if self.loss_fn.needs_rejected else None
        loss, stats = self.loss_fn(losses.PairBatch(chosen, rejected, ref_chosen, ref_rejected, gap=gap), self.options)
        return loss.mean(), torch.cat(r), {k: v.float().mean() for k, v in stats.items()}

#----------------------------------------------------------------------------

class RewardPhase:
    """The generator's extra phase: lambda_r * reward loss + lambda_sigma * density consistency (+ lambda_image *
    image consistency), for a batch of latents; lambda_r follows --lambda-r-schedule over the run (every reward loss
    alike), as training/loss.py reports the images shown through set_progress. training/loss.py builds it by class
    name with the options of config.RewardFinetuneConfig.phase_options()."""

    def __init__(self,
        G,                          # The generator being tuned (TriPlaneGenerator).
        G_ref       = None,         # Frozen reference (the starting G_ema); None = a copy of G as it is now.
        total_kimg  = None,         # Where training ends (EG3D's total_kimg): where a scheduled lambda_r ends.
        **options,                  # RewardFinetuneConfig fields (reward_model, lambda_r, lambda_sigma, ...).
    ):
        cfg = RewardFinetuneConfig(**options)
        if not cfg.enabled or cfg.reward_model is None:
            raise ValueError('RewardPhase needs a reward kind and reward_model, a reward checkpoint')
        self.cfg = cfg
        self.generator = EG3DGenerator(G)
        if cfg.keep_w_avg:
            # Truncation pulls w toward G's running average w_avg. EG3D keeps updating it while training, so every
            # truncated sample would move with it, tuned or not, and tuned vs original at one seed would compare
            # two centres (the bundled generator's w_avg sits 5.9 from the mean of its mapped w, whose norm is 37).
            self.generator.keep_truncation_centre()
        reward = shared_reward(cfg.reward_model, self.generator.device)
        if reward.kind != cfg.reward:
            raise ValueError(f'{cfg.reward_model} is a {reward.kind} reward, but reward={cfg.reward}')
        reward = aggregate.aggregated(reward, cfg.reward_aggregate, cfg.aggregate_lambda)
        self.lambda_r, self.lambda_sigma, self.lambda_image = float(cfg.lambda_r), float(cfg.lambda_sigma), float(cfg.lambda_image)
        self.schedule = cfg.reward_weight
        if self.schedule.kind != 'constant' and total_kimg is None:
            raise ValueError(f'lambda_r_schedule={self.schedule.kind} needs total_kimg, where the schedule ends')
        self.progress = Progress(None if total_kimg is None else float(total_kimg) * 1000)
        self.batch = cfg.reward_batch
        self.in_gan_step = cfg.reward_step == 'gan'     # training/loss.py adds loss(..., drawn=) to G's GAN step.
        mode = 'clip' if cfg.reward_loss == 'pairwise' else cfg.reward_loss
        self.reward = RewardTerm(reward, mode=mode, clip=cfg.clip, recompute=cfg.reward_recompute)
        self.reward.check_box(self.generator)
        # Truncation of the samples the reward scores, and of the density consistency's (its own, or the same).
        self.truncation = dict(truncation_psi=cfg.reward_psi, truncation_cutoff=cfg.reward_cutoff)
        self.sigma_truncation = None if cfg.sigma_psi is None else dict(truncation_psi=cfg.sigma_psi,
            truncation_cutoff=cfg.sigma_cutoff)
        self.reference = (self.generator if G_ref is None else EG3DGenerator(G_ref)).reference()
        self.pairwise = None
        if cfg.reward_loss == 'pairwise':
            self.pairwise = PairwiseTerm(self.reward, tau=cfg.tau_value, pair_noise=cfg.pair_noise, truncation=self.truncation,
                loss_type=cfg.pair_loss, beta=cfg.pair_beta, label_smoothing=cfg.pair_smoothing, reference=self.reference,
                construction=cfg.pair_construction, psi_step=cfg.pair_psi_step_value)
        self.consistency = DensityConsistency(self.reference, self.reward.grid, num_points=cfg.sigma_points,
            box_points=cfg.sigma_box_points, box_grid=cfg.sigma_grid, reduce=cfg.sigma_reduce,
            truncation=self.sigma_truncation or self.truncation, recompute=cfg.reward_recompute)

    def resume_state(self):
        """The standardised reward's running statistics and where the schedule began (a resumed run continues them)."""
        return dict(mean=self.reward.mean, var=self.reward.var, count=self.reward.count, **self.progress.state())

    def load_resume_state(self, state):
        self.reward.mean, self.reward.var, self.reward.count = float(state['mean']), float(state['var']), int(state['count'])
        self.progress.load_state(state)

    def set_progress(self, cur_nimg):
        """Images shown so far (training/loss.py, before each loss): where lambda_r's schedule is."""
        self.progress.update(cur_nimg)

    @property
    def weight(self):
        """lambda_r now: --lambda-r, or its schedule at the share of the run done."""
        return self.schedule.at(self.progress.share)

    def latents(self, z, c, camera):
        """(z, c, camera) cut or topped up (fresh z, cameras repeated) to self.batch rows."""
        if self.batch is None or self.batch == len(z):
            return z, c, camera
        rows = torch.arange(self.batch, device=z.device) % len(z)
        fresh = torch.randn([max(self.batch - len(z), 0), z.shape[1]], device=z.device)
        return torch.cat([z, fresh])[:self.batch], c[rows], camera[rows]

    def loss(self, G, z, c, camera=None, neural_rendering_resolution=None, drawn=None):
        """(total loss, {name: detached value}) for latents z [N, z_dim] conditioned on c [N, c_dim]; camera [N, 25]
        and neural_rendering_resolution (None = G's own) are where and how big the image-consistency term renders.
        drawn: (ws, tri-planes) G drew for z in its GAN step (in_gan_step), scored as they are; None = drawn here."""
        assert G is self.generator.G, 'RewardPhase tunes the generator it was built with'
        camera = c if camera is None else camera
        if drawn is None:
            z, c, camera = self.latents(z, c, camera)
            field = self.generator.latent_field(z, c, requires_grad=True, **self.truncation)   # Mapped once, shared.
        else:
            field = TriPlaneField(G, drawn[0], requires_grad=True, planes=drawn[1])
        parts = {}
        if self.pairwise is not None:
            reward_loss, r, stats = self.pairwise.loss(self.generator, field, z, c)
            parts.update(stats)
            check_finite(r)
        else:
            r = check_finite(self.reward.rewards(field))
            reward_loss = self.reward.loss(r)
        total = self.weight * reward_loss
        parts.update(reward=r.detach(), reward_loss=reward_loss.detach())
        if self.schedule.kind != 'constant':
            parts['lambda_r'] = torch.tensor(self.weight)
        if self.lambda_sigma > 0:
            anchored = field if self.sigma_truncation is None else \
                self.generator.latent_field(z, c, requires_grad=True, **self.sigma_truncation)
            consistency = self.consistency.loss(anchored, z, c)
            total = total + self.lambda_sigma * consistency
            parts['density_consistency'] = consistency.detach()
        if self.lambda_image > 0:
            device = field.device
            resolution = neural_rendering_resolution or self.generator.neural_rendering_resolution
            with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
                # The renderer draws stratified ray samples: the reference renders with the same draws as G.
                target = self.reference.raw_images(self.reference.latent_field(z, c, **self.truncation), camera, resolution)
            image = self.generator.raw_images(field, camera, neural_rendering_resolution)
            image_consistency = (image - target).abs().mean()
            total = total + self.lambda_image * image_consistency
            parts['image_consistency'] = image_consistency.detach()
        return total, parts

#----------------------------------------------------------------------------
