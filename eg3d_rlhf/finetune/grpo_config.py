"""Flow-GRPO's options: one config object with help text and validation, from which its train.py flags come."""

import dataclasses
import typing

from eg3d_rlhf.finetune import lora, losses
from eg3d_rlhf.finetune.grpo import GRPOSettings
from eg3d_rlhf.finetune.circular_config import HeldOutOptions, ProbeOptions
from eg3d_rlhf.finetune.options import ConfigError, MethodConfig, check_aggregate_lambda, option
from eg3d_rlhf.rewards.aggregate import AGGREGATES

#----------------------------------------------------------------------------
# Each field is one setting of `python train.py --generator=flow --method=grpo`. Fields named as Circular-DPO's
# (reward_model, eval_seeds, demo_annotator, annotator, temperature, draw_batch, reward_aggregate, aggregate_lambda,
# eval_res) mean the same in both methods. The defaults are sized for a 2-core CPU.

STAGES = dict(final=(1,), structure=(0,), both=(0, 1))
OBJECTIVES = ('grpo', 'online-dpo', 'online-dro', 'online-kto')


@dataclasses.dataclass
class GRPOConfig(ProbeOptions, HeldOutOptions, MethodConfig):
    reward_model:   typing.Optional[str] = option(None, 'Reward checkpoint scoring every drawn asset, and the evaluation  [default: the bundled flow reward of --demo-annotator]', metavar='PT')
    objective:      str = option('grpo', 'grpo: Flow-GRPO on SDE trajectories; online-dpo: Flow-DPO on each group\'s best and worst sample, drawn by the policy now (ODE); online-dro, online-kto: the unpaired loss on every drawn sample, its reward normalised within its group (DRO regresses on it, KTO reads above the group mean as good)', choices=lambda: OBJECTIVES)
    grpo_stages:    str = option('both', 'Stages whose trajectories train: final, structure (the first), or both (the final asset\'s reward credits both trajectories across the hand-off)', choices=lambda: tuple(STAGES))
    grpo_iterations: int = option(12, 'Iterations: each draws a group per condition, scores it and takes --inner-epochs optimiser steps', min=1)
    group_size:     int = option(4, 'Samples per condition in each iteration (G); advantages are normalised within each group', min=2)
    sde_steps:      int = option(8, 'Sampling steps per stage while training (the evaluation draws with the checkpoint\'s own steps and sampler)', min=2)
    noise_level:    float = option(0.7, 'a of the SDE\'s noise sigma_t = a sqrt((1 - t) / t) (t = 0 is noise)', above=0)
    clip_range:     float = option(0.2, 'PPO clip range of the policy ratio', above=0, below=1)
    kl_beta:        float = option(0.04, 'Weight of the KL of each SDE step from the frozen reference\'s', min=0)
    online_beta:    float = option(1000.0, 'online-dpo, online-dro, online-kto: beta of the implicit reward beta * (MSE_t(reference) - MSE_t(policy)), per value of the stage', above=0)
    online_loss_type: str = option('sigmoid', 'online-dpo: the preference loss (finetune/losses.py)', choices=lambda: losses.names(needs_gap=False))
    grpo_lr:        float = option(1e-4, 'Adam learning rate of the trained stages', min=0)
    inner_epochs:   int = option(1, 'Optimiser steps per rollout (the first is on-policy: ratio 1)', min=1)
    sde_window:     int = option(0, 'MixGRPO: SDE steps per trained stage, a window that slides (ODE steps elsewhere, out of the loss); 0 = every step', min=0)
    window_shift:   int = option(1, 'MixGRPO: iterations between moves of the window by one step', min=1)
    lora_rank:      int = option(0, 'Train only LoRA adapters of this rank on the trained stages\' Linear and Conv layers (peft), merged into their weights at the end; 0 = every weight trains', min=0)
    bf16:           bool = option(False, 'bf16 autocast of every velocity pass (policy and reference) on the CPU or a CUDA device with native bf16; weights, optimizer and loss stay float32', is_flag=True)
    train_seeds:    str = option('20000-', 'First seed of the training draws: iteration i draws seeds from here on, G per condition (never the --eval-seeds)', metavar='SEED-')
    snap_iterations: int = option(0, 'Write the run\'s state (state.pt in its folder: the iterations done, the trained stages\' weights, the optimiser) every N iterations and at the last, for --resume-run; 0 = never', min=0)
    resume_run:     typing.Optional[str] = option(None, 'Go on with the run in this folder from its state.pt (written with --snap-iterations), with its options; it ends as it would have without the stop', metavar='DIR')
    reward_aggregate: str = option('mean', "How the reward ensemble's member scores become one reward: mean, min, mean-std, uwo (as Circular-DPO's)", choices=lambda: AGGREGATES)
    aggregate_lambda: float = option(1.0, 'Weight of the members\' spread in --reward-aggregate=mean-std or uwo', min=0)

    def validate(self):
        self.check_annotators()
        self.check_probe()
        check_aggregate_lambda(self.reward_aggregate, self.aggregate_lambda)
        if self.lora_rank and not lora.available():
            raise ConfigError(lora.MISSING)
        if self.objective != 'grpo' and (self.sde_window or self.noise_level != 0.7 or self.clip_range != 0.2
                or self.kl_beta != 0.04 or self.inner_epochs != 1):
            raise ConfigError('--sde-window, --noise-level, --clip-range, --kl-beta and --inner-epochs are Flow-GRPO\'s; '
                f'--objective={self.objective} draws with ODE steps and takes one step of its loss per iteration')
        if self.objective == 'grpo' and self.online_beta != 1000.0:
            raise ConfigError('--online-beta is for the online objectives (online-dpo, online-dro, online-kto)')
        if self.objective != 'online-dpo' and self.online_loss_type != 'sigmoid':
            raise ConfigError('--online-loss-type is for --objective=online-dpo (online-dro and online-kto name their loss)')
        if self.sde_window >= self.sde_steps:
            raise ConfigError(f'--sde-window={self.sde_window} is not below --sde-steps={self.sde_steps}: a window '
                'of every step is --sde-window=0')
        first = self.train_seeds.rstrip('-')
        if not self.train_seeds.endswith('-') or not first.isdigit():
            raise ConfigError(f'--train-seeds={self.train_seeds}: give the first seed followed by a dash, e.g. 20000-')
        drawn = range(self.first_train_seed, self.first_train_seed + self.grpo_iterations * self.group_size)
        if set(drawn) & set(self.seeds('eval_seeds')):
            raise ConfigError('--train-seeds and --eval-seeds overlap: held-out seeds must be new')

    @property
    def first_train_seed(self):
        return int(self.train_seeds.rstrip('-'))

    def settings(self):
        """The trainer's GRPOSettings."""
        return GRPOSettings(group_size=self.group_size, steps=self.sde_steps, noise_level=self.noise_level,
            clip_range=self.clip_range, kl_beta=self.kl_beta, lr=self.grpo_lr, inner_epochs=self.inner_epochs,
            trained=STAGES[self.grpo_stages], window=self.sde_window or None, window_shift=self.window_shift,
            lora_rank=self.lora_rank, bf16=self.bf16)

#----------------------------------------------------------------------------
