"""Online RL of a multi-stage flow: Flow-GRPO (the ODE as an SDE, per-step log-probabilities, groups), online DPO, DRO, KTO."""

import dataclasses
import math

import numpy as np
import torch

from eg3d_rlhf.finetune import lora, losses
from eg3d_rlhf.finetune.flow_dpo import Side, flow_dpo_loss, in_precision
from eg3d_rlhf.generators.flow import check_sigma, mse_t, noise_seed, velocity_at
from torch_utils import misc

#----------------------------------------------------------------------------
# Our flows run t from 0 (noise x0) to 1 (data x1) along x_t = t x1 + (1 - t) x0, and v(x, t) estimates E[x1 - x0 |
# x_t = x]. Then E[x0 | x] = x - t v and, as x0 ~ N(0, I), the score of p_t is -E[x0 | x] / (1 - t):
#   score(x, t) = -(x - t v) / (1 - t)
# For any sigma_t the SDE
#   dx = [v - sigma_t^2 / (2 (1 - t)) (x - t v)] dt + sigma_t dW
# has the ODE's marginals p_t (Fokker-Planck: the extra drift sigma^2/2 * score cancels the diffusion). Flow-GRPO
# (Liu et al. 2025, eq. 9) takes sigma_t = a sqrt(s / (1 - s)) in its noise level s; ours is s = 1 - t:
#   sigma_t = a sqrt((1 - t) / t),   t clamped to >= t_min (the first step's end; Flow-GRPO caps it likewise),
# so the noise is largest near pure noise and vanishes at the data. One Euler-Maruyama step from t to t + dt is the
# Gaussian N(mean, std^2 I) with mean = x + dt * drift and std = sigma_t sqrt(dt): its log-density is what the policy
# ratio and the KL compare. As our MSE_t is a mean over a stage's elements, so is every log-probability here: the
# Gaussian log-density per element, averaged (Flow-GRPO averages too), which keeps the clip range independent of
# the stage's size.
# MixGRPO (Li et al. 2025): the SDE only on a window of `window` steps, the ODE (a plain Euler step, no log-prob)
# elsewhere; only window steps enter the loss, so a training step runs the policy on them alone. The window slides.


def sde_sigma(t, a, t_min):
    """sigma_t = a sqrt((1 - t) / t) of a step starting at t (a number), t clamped to [t_min, 1]."""
    t = min(max(float(t), float(t_min)), 1.0)
    return a * math.sqrt((1.0 - t) / t)


def step_mean(x, v, t, dt, sigma):
    """The mean of the SDE step from x at t (a number) with velocity v: x + dt * (v - sigma^2 / (2 (1 - t)) (x - t v))."""
    if sigma == 0:
        return x + dt * v
    return x + dt * (v - sigma ** 2 / (2 * (1 - t)) * (x - t * v))


def gaussian_log_prob(x, mean, std):
    """log N(x; mean, std^2) per element, averaged over each sample's elements: [N]."""
    z = (x - mean) / std
    return (-0.5 * z.square() - math.log(std) - 0.5 * math.log(2 * math.pi)).flatten(1).mean(dim=1)


def draw_seed(seed, run_seed):
    """The seed a training draw of sample `seed` takes its noise from in a run of training seed `run_seed`: the
    sample's own for run seed 0, a different one for every other (the training seed sets every training draw)."""
    if not run_seed:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(run_seed), 11]).generate_state(1, dtype=np.uint64)[0] >> 1)


def step_noise(seeds, stage, step, iteration, shape, device):
    """The SDE noise [N, *shape] of one step: each sample's own, from (its seed, the stage, the step, the iteration),
    so a rollout is the same in any batch and on any device."""
    draws = [torch.randn(shape, generator=torch.Generator().manual_seed(int(np.random.SeedSequence(
        [noise_seed(s, stage), int(step), int(iteration)]).generate_state(1, dtype=np.uint64)[0]))) for s in seeds]
    return torch.stack(draws).to(device, torch.float32)


@dataclasses.dataclass
class StageTrajectory:
    """One stage's part of a rollout: every state, which steps were SDE steps, and their log-probabilities."""
    states:     torch.Tensor        # [N, K + 1, *data_shape]: x at t = 0, 1/K, ..., 1.
    sde:        list                # [K] bools: step k was an SDE step (in the window of a trained stage).
    sigmas:     list                # [K] sigma_t of each step (0 for ODE steps).
    log_probs:  torch.Tensor        # [N, K]: log-probability of each SDE step under the policy that drew it (0 elsewhere).
    context:    object              # The previous stage's decode (None at the first stage).


@dataclasses.dataclass
class Rollout:
    """A batch drawn by rollout(): each stage's trajectory and the finished assets."""
    sigma:      torch.Tensor        # Raw sigma [N, R, R, R] of the last decode.
    stages:     list                # StageTrajectory of each stage, first to last.
    cond:       object              # int64 [N] or None.
    seeds:      list                # The seeds drawn.


def window_steps(steps, window, start):
    """The SDE steps of a stage: all of them (window None) or `window` steps from `start` (kept inside 0..steps-1)."""
    if window is None or window >= steps:
        return set(range(steps))
    start = max(0, min(int(start), steps - window))
    return set(range(start, start + window))


def rollout(pipeline, seeds, cond, steps, a, trained, window=None, window_start=0, iteration=0, t_min=None, bf16=False):
    """Draw seeds through every stage of `pipeline` with `steps` steps per stage: SDE steps (noise level a) in the
    window of each stage index in `trained`, Euler ODE steps elsewhere; without gradients; velocity passes under bf16
    autocast with bf16. cond: int64 [N] or None."""
    t_min = 1.0 / steps if t_min is None else t_min
    context, stages = None, []
    with torch.no_grad():
        for index, stage in enumerate(pipeline.stages):
            x = pipeline.noise(seeds, index, context)
            sde = window_steps(steps, window, window_start) if index in trained else set()
            states, log_probs, sigmas = [x], torch.zeros(len(seeds), steps), []
            for k in range(steps):
                t, dt = k / steps, 1.0 / steps
                sigma = sde_sigma(t, a, t_min) if k in sde else 0.0
                v = velocity_at(in_precision(stage.velocity, bf16), x, t, cond, context)
                mean = step_mean(x, v, t, dt, sigma)
                if sigma:
                    std = sigma * math.sqrt(dt)
                    x = mean + std * step_noise(seeds, index, k, iteration, x.shape[1:], x.device)
                    log_probs[:, k] = gaussian_log_prob(x, mean, std).cpu()
                else:
                    x = mean
                states.append(x)
                sigmas.append(sigma)
            stages.append(StageTrajectory(torch.stack(states, dim=1), [k in sde for k in range(steps)], sigmas,
                log_probs, context))
            context = stage.decode(x, context)
    return Rollout(check_sigma(context, len(seeds)), stages, cond, list(seeds))


def step_log_prob(velocity, trajectory, k, cond, steps, bf16=False):
    """(log-prob [N] of trajectory step k under `velocity`, the step's mean, its std): the policy's with gradients,
    or a reference's; its pass under bf16 autocast with bf16. Step k must be an SDE step."""
    assert trajectory.sde[k], f'step {k} is an ODE step: it has no log-probability'
    x, x_next = trajectory.states[:, k], trajectory.states[:, k + 1]
    t, dt, sigma = k / steps, 1.0 / steps, trajectory.sigmas[k]
    mean = step_mean(x, velocity_at(in_precision(velocity, bf16), x, t, cond, trajectory.context), t, dt, sigma)
    std = sigma * math.sqrt(dt)
    return gaussian_log_prob(x_next, mean, std), mean, std

#----------------------------------------------------------------------------
# The objective (Flow-GRPO eq. 8, DeepSeekMath's GRPO): G samples per condition; advantage A_i = (r_i - mean of its
# group) / (sd of its group + eps); per SDE step the ratio r = exp(log p_theta - log p_old) and the clipped surrogate
# -min(r A, clip(r, 1 - eps, 1 + eps) A), plus kl_beta times the KL of the policy's step from the reference's: two
# Gaussians of one std, so KL = |mean_theta - mean_ref|^2 / (2 std^2), averaged over elements like the log-probs.


def group_advantages(rewards, eps=1e-4):
    """Advantages [B, G] of rewards [B, G] (B conditions, G samples each): normalised within each group."""
    misc.assert_shape(rewards, [None, None])
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, unbiased=False, keepdim=True)
    return (rewards - mean) / (std + eps)


def clipped_surrogate(log_prob, old_log_prob, advantages, clip_range):
    """(loss [N], stats) of PPO's clipped surrogate per sample: -min(r A, clip(r, 1 - c, 1 + c) A), r = exp(log_prob -
    old_log_prob). stats: ratio, clipfrac (share of samples whose clip was active), approx_kl (mean of (r - 1) - log r)."""
    log_ratio = log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_range, 1 + clip_range) * advantages
    loss = -torch.minimum(unclipped, clipped)
    with torch.no_grad():
        stats = dict(ratio=ratio.mean(), clipfrac=(clipped < unclipped).float().mean(),
            approx_kl=((ratio - 1) - log_ratio).mean())
    return loss, stats


def gaussian_kl(mean, ref_mean, std):
    """KL [N] of N(mean, std^2) from N(ref_mean, std^2), per element averaged over each sample's elements."""
    return ((mean - ref_mean).square() / (2 * std ** 2)).flatten(1).mean(dim=1)


@dataclasses.dataclass
class GRPOSettings:
    """One Flow-GRPO configuration (the trainer's; the method's config maps its flags onto it)."""
    group_size:     int = 4         # G: samples per condition.
    steps:          int = 8         # Sampling steps per stage in training (evaluation may use more).
    noise_level:    float = 0.7     # a of sigma_t = a sqrt((1 - t) / t).
    clip_range:     float = 0.2     # PPO's clip range of the ratio.
    kl_beta:        float = 0.04    # Weight of the KL to the reference.
    lr:             float = 1e-4    # Adam learning rate.
    inner_epochs:   int = 1         # Optimiser passes over each rollout (the first is on-policy: ratio 1).
    trained:        tuple = (1,)    # Stage indices trained: (1,) final only, (0,) structure only, (0, 1) both.
    window:         int = None      # MixGRPO: SDE steps per trained stage (None: every step).
    window_shift:   int = 1         # MixGRPO: iterations between moves of the window by one step.
    adv_eps:        float = 1e-4    # eps of the group normalisation.
    lora_rank:      int = 0         # Train LoRA adapters of this rank on the trained stages (finetune/lora.py); 0 = every weight.
    bf16:           bool = False    # Velocity passes under bf16 autocast (weights, optimizer and loss stay float32).
    seed:           int = 0         # The run's training seed: every training draw's noise (draw_seed) and online DPO's.


class FlowGRPO:
    """Flow-GRPO of a FlowPipeline (its trained stages tuned in place, their weights made to require gradients)
    against a frozen copy of itself, with `reward(sigma [N, R, R, R], cond [N] or None) -> [N]` scoring finished
    assets. Under torchrun (ranks: shards.Ranks) each rank draws every size-th condition's group, the rewards are
    gathered, and the gradients summed: every rank takes the step of the whole iteration and the weights stay equal."""

    def __init__(self, pipeline, reward, settings, ranks=None):
        self.pipeline, self.reward, self.s = pipeline, reward, settings
        self.ranks = ranks if ranks is not None and ranks.size > 1 else None
        if not self.s.trained or any(i not in range(len(pipeline.stages)) for i in self.s.trained):
            raise ValueError(f'trained stages {self.s.trained} are not stages of a {len(pipeline.stages)}-stage pipeline')
        self.reference = pipeline.frozen_copy()
        for i in self.s.trained:                        # The trained stages learn, whatever they were set to.
            stage = pipeline.stages[i]
            if self.s.lora_rank:                        # Only the adapters: the base weights stay frozen.
                stage.velocity = lora.wrap(stage.velocity.requires_grad_(False), self.s.lora_rank, seed=i)
            else:
                stage.velocity.requires_grad_(True)
        self.params = [p for i in self.s.trained for p in pipeline.stages[i].velocity.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=self.s.lr)
        self.iteration = 0

    def mine(self, count):
        """The indices of the `count` conditions whose groups this rank draws (all of them in one process)."""
        if self.ranks is None:
            return list(range(count))
        if count < self.ranks.size:
            raise ValueError(f'{count} condition(s) an iteration cannot be shared by {self.ranks.size} processes; '
                'use at most one process per condition')
        return self.ranks.share(range(count))

    def gathered(self, mine, rewards, count):
        """Every condition's rewards [count * G] in condition order, from this rank's [len(mine) * G]."""
        if self.ranks is None:
            return rewards
        every = torch.zeros(count, self.s.group_size)
        for rows, part in self.ranks.all_gather((mine, rewards)):
            every[rows] = part.view(len(rows), self.s.group_size)
        return every.view(-1)

    def summed(self, totals):
        """`totals` (this rank's share of each statistic) summed over the ranks; the gradients summed too."""
        if self.ranks is None:
            return totals
        self.ranks.sum_gradients(self.params)
        parts = self.ranks.all_gather(totals)
        return {name: sum(part.get(name, 0.0) for part in parts) for name in dict.fromkeys(k for p in parts for k in p)}

    def draw_mine(self, conditions, seed_groups, sde=True):
        """(this rank's condition indices, draw() of their groups, every condition's rewards)."""
        mine = self.mine(len(conditions))
        drawn, cond, rewards = self.draw([conditions[c] for c in mine], [seed_groups[c] for c in mine], sde)
        return mine, drawn, cond, rewards, self.gathered(mine, rewards, len(conditions))

    def window_start(self):
        """Where the window starts this iteration: it moves one step every window_shift iterations, and wraps."""
        if self.s.window is None:
            return 0
        return (self.iteration // self.s.window_shift) % max(1, self.s.steps - self.s.window + 1)

    def draw(self, conditions, seed_groups, sde=True):
        """(Rollout, cond, rewards [N]) of seed_groups[c] (G seeds each) under condition c of `conditions` (None:
        unconditional): SDE steps in the trained stages' windows, or (sde False) ODE steps everywhere."""
        s, seeds, cond = self.s, [], []
        for c, group in zip(conditions, seed_groups):
            if len(group) != s.group_size:
                raise ValueError(f'a group needs {s.group_size} seeds, got {len(group)}')
            seeds += list(group)
            cond += [c] * len(group)
        cond = None if conditions[0] is None else torch.tensor(cond, dtype=torch.int64, device=self.pipeline.device)
        drawn = rollout(self.pipeline, [draw_seed(x, s.seed) for x in seeds], cond, s.steps,
            s.noise_level if sde else 0.0, s.trained if sde else (), s.window, self.window_start(), self.iteration,
            bf16=s.bf16)
        with torch.no_grad():
            rewards = torch.as_tensor(self.reward(drawn.sigma, cond), dtype=torch.float32).cpu()
        misc.assert_shape(rewards, [len(seeds)])
        if not torch.isfinite(rewards).all():
            raise ValueError('the reward gave nan or inf for a drawn sample')
        return drawn, cond, rewards

    @staticmethod
    def reward_stats(rewards):
        """The drawn samples' reward: mean, sd, and the quartiles (one odd sample moves the mean, not them)."""
        q25, median, q75 = (float(q) for q in torch.quantile(rewards, torch.tensor([0.25, 0.5, 0.75])))
        return dict(reward_mean=float(rewards.mean()), reward_std=float(rewards.std(unbiased=False)),
            reward_median=median, reward_q25=q25, reward_q75=q75)

    def step(self, conditions, seed_groups):
        """One iteration: per condition c of `conditions` (None: unconditional) the seeds of seed_groups[c] (G each)
        drawn, scored and normalised within their group; then inner_epochs optimiser steps. Returns the stats."""
        s = self.s
        mine, drawn, cond, rewards, every = self.draw_mine(conditions, seed_groups)
        advantages = group_advantages(rewards.view(len(mine), s.group_size), s.adv_eps).view(-1)
        stats = dict(self.reward_stats(every), window_start=self.window_start())
        count = sum(sum(drawn.stages[i].sde) for i in s.trained)      # SDE steps in the loss, every epoch.
        share = len(mine) / len(conditions)             # This rank's part of each mean over samples (1 in one process).
        for epoch in range(s.inner_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            totals = dict(loss=0.0, policy_loss=0.0, kl=0.0, ratio=0.0, clipfrac=0.0, approx_kl=0.0)
            for i in s.trained:
                trajectory = drawn.stages[i]
                for k in (k for k in range(s.steps) if trajectory.sde[k]):
                    log_prob, mean, std = step_log_prob(self.pipeline.stages[i].velocity, trajectory, k, cond, s.steps,
                        s.bf16)
                    policy_loss, part = clipped_surrogate(log_prob.cpu(), trajectory.log_probs[:, k], advantages,
                        s.clip_range)
                    loss = policy_loss.mean() * share
                    kl = torch.zeros(())
                    if s.kl_beta:
                        with torch.no_grad():
                            _, ref_mean, _ = step_log_prob(self.reference.stages[i].velocity, trajectory, k, cond,
                                s.steps, s.bf16)
                        kl = gaussian_kl(mean, ref_mean, std).mean().cpu() * share
                        loss = loss + s.kl_beta * kl
                    (loss / count).backward()
                    totals['loss'] += float(loss.detach()) / count
                    totals['policy_loss'] += float(policy_loss.detach().mean()) * share / count
                    totals['kl'] += float(kl.detach()) / count
                    for name in ('ratio', 'clipfrac', 'approx_kl'):
                        totals[name] += float(part[name]) * share / count
            totals = self.summed(totals)
            self.optimizer.step()
            stats.update({name if epoch == 0 else f'{name}/epoch{epoch}': v for name, v in totals.items()})
        self.iteration += 1
        return stats

    def state_dict(self):
        """Where training stands: the iterations done, the trained stages' weights (adapters and all), the optimiser."""
        return dict(iteration=self.iteration, optimizer=self.optimizer.state_dict(),
            stages={str(i): self.pipeline.stages[i].velocity.state_dict() for i in self.s.trained})

    def load_state_dict(self, state):
        """Go on from a state_dict() of a trainer of the same settings and pipeline (every draw after it is seeded by
        its iteration, so training ends as it would have without the stop)."""
        if sorted(state['stages']) != sorted(str(i) for i in self.s.trained):
            raise ValueError(f'the state trains stages {sorted(state["stages"])}, these settings {list(self.s.trained)}')
        for i in self.s.trained:
            self.pipeline.stages[i].velocity.load_state_dict(state['stages'][str(i)])
        self.optimizer.load_state_dict(state['optimizer'])
        self.iteration = int(state['iteration'])

    def finish(self):
        """The tuned pipeline with any LoRA adapters folded into their stages' weights (training ends here)."""
        if self.s.lora_rank:
            for i in self.s.trained:
                self.pipeline.stages[i].velocity = lora.merge(self.pipeline.stages[i].velocity)
        return self.pipeline

#----------------------------------------------------------------------------
# Online DPO: each iteration draws G samples per condition with the current policy (ODE steps), lets the reward pick
# each group's best and worst, and takes one Flow-DPO step (flow_dpo_loss: one t and one x0 per pair, shared by both
# sides, MSE_t against the frozen reference) on every trained stage's part of those pairs. The pairs come from where the
# policy is now, not from a fixed bank; a group whose rewards tie gives no pair.


class OnlineDPO(FlowGRPO):
    """Online Flow-DPO of a FlowPipeline with the same reward, groups and interface as FlowGRPO; `beta` and `loss_type`
    as Flow-DPO's (finetune/losses.py)."""

    def __init__(self, pipeline, reward, settings, beta=1000.0, loss_type='sigmoid', ranks=None):
        super().__init__(pipeline, reward, settings, ranks)
        self.beta, self.loss_type = float(beta), loss_type

    def step_generator(self, salt):
        """The CPU generator of this iteration's t and x0 draws (the same on every rank)."""
        return torch.Generator().manual_seed(int(np.random.SeedSequence([self.iteration, salt,
            *[self.s.seed] * bool(self.s.seed)]).generate_state(1)[0]))

    @staticmethod
    def backward(loss, part, weight, totals):
        """The gradient of weight x the mean of loss [N]; weight x its mean and each stat's of `part` added to totals."""
        (loss.mean() * weight).backward()
        totals['loss'] = totals.get('loss', 0.0) + float(loss.detach().mean()) * weight
        for name, value in part.items():
            totals[name] = totals.get(name, 0.0) + float(value.float().mean()) * weight

    def step(self, conditions, seed_groups):
        """One iteration: the groups drawn with ODE steps (the policy's own samples), each group's best and worst
        paired, one Flow-DPO step on the trained stages. Returns the stats."""
        s, G = self.s, self.s.group_size
        mine, drawn, cond, _, every = self.draw_mine(conditions, seed_groups, sde=False)
        groups = every.view(len(conditions), G)
        best = groups.argmax(dim=1) + torch.arange(len(conditions)) * G
        worst = groups.argmin(dim=1) + torch.arange(len(conditions)) * G
        keep = every[best] > every[worst]
        best, worst = best[keep], worst[keep]
        gap = float((every[best] - every[worst]).mean()) if len(best) else 0.0
        stats = dict(self.reward_stats(every), pairs=int(keep.sum()), reward_gap=gap)
        self.optimizer.zero_grad(set_to_none=True)
        if len(best):
            rng = self.step_generator(7)
            local = {c: n for n, c in enumerate(mine)}  # Row of a condition's group in this rank's draw.
            pairs = [j for j, c in enumerate(torch.arange(len(conditions))[keep].tolist()) if c in local]
            row = lambda index: local[int(index) // G] * G + int(index) % G
            rows_best = torch.tensor([row(best[j]) for j in pairs], dtype=torch.int64)
            rows_worst = torch.tensor([row(worst[j]) for j in pairs], dtype=torch.int64)
            share = len(pairs) / len(best)              # This rank's part of the mean over pairs (1 in one process).
            pair_cond = None if cond is None else cond[rows_best]
            totals = {}
            for i in s.trained:
                trajectory = drawn.stages[i]
                x0 = torch.randn([len(best), *trajectory.states.shape[2:]], generator=rng)[pairs].to(
                    trajectory.states.device)
                t = torch.rand([len(best)], generator=rng)[pairs]
                if not pairs:                           # Nothing here this iteration: the others' step still counts.
                    continue
                side = lambda rows: Side(x0, trajectory.states[rows, -1], None if trajectory.context is None else
                    trajectory.context[rows])
                policy = in_precision(self.pipeline.stages[i].velocity, s.bf16)
                reference = in_precision(self.reference.stages[i].velocity, s.bf16)
                loss, part = flow_dpo_loss(policy, reference, side(rows_best), side(rows_worst), t.to(x0.device),
                    pair_cond, beta=self.beta, loss_type=self.loss_type)
                self.backward(loss, part, share / len(s.trained), totals)
            stats.update(self.summed(totals))
            self.optimizer.step()
        self.iteration += 1
        return stats

#----------------------------------------------------------------------------
# Online unpaired objectives (DSO's DRO, KTO; finetune/losses.py's UNPAIRED): each iteration draws G samples per
# condition with the current policy (ODE steps), scores them, and normalises the scores within each group as Flow-GRPO
# does. Every sample then trains alone on every trained stage, with one t and one x0 of its own and -MSE_t against the
# frozen reference as Flow-DPO's: DRO regresses beta (-MSE_t(theta) + MSE_t(ref)) on the sample's advantage (the group
# mean is the baseline V, so V = 0), KTO reads a positive advantage as good and the rest as bad; KTO's reference point
# z is the mean implicit reward over every drawn sample (all ranks). A group whose rewards tie teaches nothing.


class OnlineUnpaired(OnlineDPO):
    """An unpaired loss (`loss_type`: 'dro' or 'kto') on the policy's own draws, with the interface of FlowGRPO."""

    def __init__(self, pipeline, reward, settings, beta=1000.0, loss_type='dro', ranks=None):
        super().__init__(pipeline, reward, settings, beta, loss_type, ranks)
        self.loss_fn = losses.get_unpaired(loss_type)

    def step(self, conditions, seed_groups):
        """One iteration: the groups drawn with ODE steps, their advantages, one step of the unpaired loss on the
        trained stages. Returns the stats."""
        s, G = self.s, self.s.group_size
        mine, drawn, cond, rewards, every = self.draw_mine(conditions, seed_groups, sde=False)
        advantages = group_advantages(rewards.view(len(mine), G), s.adv_eps).view(-1)
        labels = advantages if self.loss_type == 'dro' else (advantages > 0).float()
        rows = torch.tensor([c * G + g for c in mine for g in range(G)], dtype=torch.int64)
        share, total = len(rows) / len(every), len(every)
        stats = self.reward_stats(every)
        self.optimizer.zero_grad(set_to_none=True)
        rng, totals = self.step_generator(13), {}
        for i in s.trained:
            trajectory = drawn.stages[i]
            x0 = torch.randn([total, *trajectory.states.shape[2:]], generator=rng)[rows].to(trajectory.states.device)
            t = torch.rand([total], generator=rng)[rows].to(x0.device)
            x1 = trajectory.states[:, -1]
            with torch.no_grad():
                ref = -mse_t(in_precision(self.reference.stages[i].velocity, s.bf16), x0, x1, t, cond, trajectory.context)
            pol = -mse_t(in_precision(self.pipeline.stages[i].velocity, s.bf16), x0, x1, t, cond, trajectory.context)
            z = None
            if self.loss_type == 'kto':                 # The reference point over every rank's samples.
                z = torch.tensor(self.summed_value(float((self.beta * (pol - ref)).detach().sum()) / total))
            batch = losses.UnpairedBatch(pol.float(), ref.float(), labels.to(pol.device),
                value=torch.zeros_like(labels).to(pol.device), reference_point=z)
            loss, part = self.loss_fn(batch, losses.UnpairedOptions(beta=self.beta))
            self.backward(loss, part, share / len(s.trained), totals)
        stats.update(self.summed(totals))
        self.optimizer.step()
        self.iteration += 1
        return stats

    def summed_value(self, value):
        """A number summed over the ranks (itself in one process)."""
        return value if self.ranks is None else sum(self.ranks.all_gather(value))

#----------------------------------------------------------------------------
