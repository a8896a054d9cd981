"""The reward fine-tuning options: one config object with help text and validation, from which train.py's flags come."""

import dataclasses
import typing

from eg3d_rlhf.data.annotators import taste_names
from eg3d_rlhf.finetune import losses
from eg3d_rlhf.finetune.options import (ConfigError, MethodConfig, check_aggregate_lambda, check_stop_options,
    flag_name, given_options, option)
from eg3d_rlhf.finetune.schedules import SCHEDULES, Schedule
from eg3d_rlhf.rewards import REWARDS
from eg3d_rlhf.rewards.aggregate import AGGREGATES

#----------------------------------------------------------------------------
# Each field is one setting, stated once: its default, its help, its range. train.py derives its --reward-* flags from
# these fields (options.click_options_of), the embedded demo overrides some of them by name (synthetic/demo.py), and
# RewardPhase and RewardPanel take the validated values. A field's flag is its name with dashes.

LOSS_MODES = ('clip', 'standardised', 'pairwise')
TAU_DEFAULT = 0.1                       # --tau when not given (it is given only with --reward-loss=pairwise).
# --pair-construction: how pairwise makes the two samples of a latent z (DreamDPO's pairs moved to latents):
# offsets: z plus two small random offsets; truncation: z itself at psi and at psi - --pair-psi-step (the paper's
# same noise at two steps); latents (the default, the sweep's best: tools/sweep_pairwise.py): two independent fresh
# latents (its different noises at one step).
PAIR_CONSTRUCTIONS = ('offsets', 'truncation', 'latents')
PAIR_PSI_STEP_DEFAULT = 0.2             # --pair-psi-step when not given (it is given only with truncation).
REDUCTIONS = ('mean', 'sum')            # --sigma-reduce: how the density consistency of a batch's samples adds up.
OPTIMIZERS = ('shared', 'own')          # --reward-optimizer: the reward phase on G's optimizer, or on its own.
REWARD_STEPS = ('phase', 'gan')         # --reward-step: the reward term in a phase of its own, or in G's GAN step.


@dataclasses.dataclass
class RewardFinetuneConfig(MethodConfig):
    reward:             str = option('none', 'Reward fine-tuning on the slab sigma with this kind of reward model',
                            choices=lambda: (*sorted(REWARDS), 'none'))
    reward_model:       typing.Optional[str] = option(None, 'Reward checkpoint (tools/train_reward.py)  [default: the bundled one of --reward; with --generator=flow, the bundled flow reward]',
                            metavar='PT')
    lambda_r:           float = option(10.0, 'Weight of the reward loss', min=0)
    lambda_r_schedule:  str = option('constant', 'constant: --lambda-r throughout; linear or cosine: from --lambda-r-start to --lambda-r-end over the run\'s kimg (DreamCS\'s alpha(t))',
                            choices=lambda: SCHEDULES)
    lambda_r_start:     typing.Optional[float] = option(None, 'Weight of the reward loss at the run\'s first step, with --lambda-r-schedule  [default: --lambda-r]', min=0)
    lambda_r_end:       typing.Optional[float] = option(None, 'Weight of the reward loss at --kimg, with --lambda-r-schedule  [default: --lambda-r]', min=0)
    lambda_sigma:       float = option(0.01, 'Weight of the density consistency to the starting G_ema', min=0)
    sigma_box_points:   int = option(0, 'Density consistency also at this many random points of the whole box', min=0)
    sigma_grid:         int = option(0, 'Density consistency at every point of an N^3 grid over the whole box instead of random slab points (0 = off)', min=0)
    sigma_psi:          typing.Optional[float] = option(None, 'Truncation psi of the density consistency\'s own samples  [default: it reuses the reward\'s]', min=0)
    sigma_cutoff:       typing.Optional[int] = option(None, 'Truncation cutoff with --sigma-psi  [default: every layer]', min=1)
    sigma_reduce:       str = option('mean', 'Density consistency over the batch: the mean of the samples\' L1, or their sum',
                            choices=lambda: REDUCTIONS)
    lambda_image:       float = option(0.0, 'Weight of the raw-image consistency to the starting G_ema', min=0)
    reward_loss:        str = option('clip', 'clip: -clip(r); standardised: running mean/std first; pairwise: DreamDPO',
                            choices=lambda: LOSS_MODES)
    tau:                typing.Optional[float] = option(None, f'Reward gap above which pairwise pushes the loser away  [default: {TAU_DEFAULT}]', min=0)
    pair_loss:          str = option('dreamdpo', 'pairwise: the preference loss of the two samples (finetune/losses.py): dreamdpo, sigmoid (DPO), ipo, hinge, robust, sft',
                            choices=lambda: losses.names())
    pair_beta:          float = option(1.0, 'pairwise: beta of the DPO-family losses (implicit reward per unit of -MSE to a sample\'s slab)', min=0)
    pair_smoothing:     float = option(0.0, 'pairwise: label smoothing of the sigmoid and robust losses', min=0, below=0.5)
    pair_construction:  str = option('latents', 'pairwise: the two samples of a latent z: latents (two independent latents), offsets (z plus two N(0, 0.3^2) offsets), truncation (z at --reward-psi and at --reward-psi minus --pair-psi-step)',
                            choices=lambda: PAIR_CONSTRUCTIONS)
    pair_psi_step:      typing.Optional[float] = option(None, f'pairwise, --pair-construction=truncation: how much lower the second sample\'s psi is  [default: {PAIR_PSI_STEP_DEFAULT}]', above=0)
    reward_psi:         float = option(1.0, 'Truncation psi of the samples the reward scores while tuning', min=0)
    reward_cutoff:      typing.Optional[int] = option(None, 'Truncation cutoff with --reward-psi  [default: every layer]', min=1)
    reward_every:       int = option(1, 'Run the reward phase every N steps', min=1)
    reward_optimizer:   str = option('shared', "shared: the reward phase steps G's Adam; own: an Adam of its own at --glr",
                            choices=lambda: OPTIMIZERS)
    reward_batch:       typing.Optional[int] = option(None, 'Samples per reward pass  [default: --batch-gpu]', min=1)
    reward_step:        str = option('phase', "phase: the reward term is a G phase of its own after G's GAN step, with its own latents and its own backbone pass (the published code's G_depth); gan: it is added to G's GAN loss, scored on the samples G renders for D, one backward and one Adam step (the paper's loss; the demo's)",
                            choices=lambda: REWARD_STEPS)
    reward_aggregate:   str = option('mean', "How the reward ensemble's member scores make the reward G ascends: mean, min (the worst member), mean-std (mean - --aggregate-lambda x sd), uwo (mean - --aggregate-lambda x variance)",
                            choices=lambda: AGGREGATES)
    aggregate_lambda:   float = option(1.0, 'Weight of the members\' spread in --reward-aggregate=mean-std or uwo', min=0)
    reward_recompute:   bool = option(False, 'Gradient checkpointing of the slab decoder passes (less GPU memory)', is_flag=True)
    panel_seeds:        str = option('2000-2199', 'Seeds scored every tick for the reward report, or none', metavar='LIST')
    panel_psi:          float = option(0.7, 'Truncation psi of the panel seeds\' samples (cutoff 14)', min=0)
    collateral_seeds:   int = option(64, 'The first N panel seeds are measured under every simulated taste, the mesh statistics and the true nose at the start and the end: the report\'s collateral table and hacking alarm (0 = none)', min=0)
    collateral_res:     int = option(128, 'Cube resolution of the collateral seeds\' slabs', min=16)
    stop_on_hacking:    bool = option(False, 'Measure the collateral every tick and stop, with a snapshot, at the first tick where the reward rose while a taste prefers the start (binomial p < 0.05)', is_flag=True)
    gold_taste:         typing.Optional[str] = option(None, 'A simulated taste (e.g. nose) scored on the panel\'s slabs every tick as the gold standard, beside the proxy and the distance from the start  [default: none]',
                            choices=lambda: taste_names(), metavar='TASTE')
    stop_at_peak:       bool = option(False, 'Stop, with a snapshot, once the panel\'s gold has passed its peak (see --peak-margin); without --gold-taste, once the members\' disagreement on the panel reaches --disagreement-stop times its start', is_flag=True)
    peak_margin:        float = option(0.2, 'Share of the gold\'s peak gain whose loss stops --stop-at-peak (a fall with the fit\'s peak behind also stops it)', min=0, below=1)
    gold_study_every:   int = option(0, 'Every N panel ticks (the start first) keep G_ema for a blind same-seed study of it against the start: gold from people (gold-studies/ and gold_studies.json in the run folder; tools/gold_studies.py prints the commands); 0 = off', min=0)
    disagreement_stop:  float = option(2.0, 'With --stop-at-peak and no --gold-taste: stop when the members\' mean sd on the panel reaches this multiple of its start', above=1)
    peak_noise:         float = option(2.0, 'With --stop-at-peak and a gold taste: the gold\'s fall must also reach this many standard errors of the difference of two panel means (the start\'s sd x sqrt(2/samples)); 0 = any fall', min=0)
    peak_patience:      int = option(1, 'With --stop-at-peak and a gold taste: the gold rule must hold at this many recorded ticks in a row', min=1)
    # Not flags: fixed parts of the method, stated here so RewardPhase restates nothing.
    clip:               float = option(10.0, 'Rewards are clipped to [-clip, clip] before they enter the loss', min=0, flag=False)
    sigma_points:       int = option(4096, 'Slab points per sample for the density consistency', min=1, flag=False)
    pair_noise:         float = option(0.3, 'pairwise: standard deviation of the z offsets making the two samples', min=0, flag=False)
    keep_w_avg:         bool = option(True, "Stop G's running w_avg update while tuning", flag=False)

    @classmethod
    def check_given(cls, options):
        """{field: value} of the fields `options` gives (None = not given); ConfigError naming the flag for a bad value
        first, then for a reward option given without --reward."""
        given = given_options(cls, options)
        if given.get('reward', 'none') == 'none':
            extra = [k for k in given if k != 'reward']
            if extra:
                raise ConfigError(f'{flag_name(extra[0])} needs --reward={"|".join(sorted(REWARDS))}')
        return given

    @classmethod
    def from_options(cls, options):
        """The config of the fields `options` gives: check_given's errors, then one for a bad combination."""
        return cls(**cls.check_given(options))

    def validate(self):
        """ConfigError (one line naming the flag) for a combination that cannot train."""
        ends = [flag_name(k) for k in ('lambda_r_start', 'lambda_r_end') if getattr(self, k) is not None]
        if ends and self.lambda_r_schedule == 'constant':
            raise ConfigError(f'{ends[0]} is for --lambda-r-schedule=linear or cosine; constant keeps --lambda-r throughout')
        if not ends and self.lambda_r_schedule != 'constant':
            raise ConfigError(f'--lambda-r-schedule={self.lambda_r_schedule} moves the weight from --lambda-r-start to '
                '--lambda-r-end (each --lambda-r when not given): give at least one')
        if self.tau is not None and self.reward_loss != 'pairwise':
            raise ConfigError(f"--tau is the pairwise loss's threshold; --reward-loss={self.reward_loss} does not use it")
        pair_defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name.startswith('pair_') and f.metadata['flag']}
        changed = [k for k, v in pair_defaults.items() if getattr(self, k) != v]
        if changed and self.reward_loss != 'pairwise':
            raise ConfigError(f'{flag_name(changed[0])} is for --reward-loss=pairwise')
        if self.pair_psi_step is not None and self.pair_construction != 'truncation':
            raise ConfigError(f'--pair-psi-step is for --pair-construction=truncation; {self.pair_construction} '
                'draws its pair at one psi')
        if self.pair_construction == 'truncation' and self.pair_psi_step_value > self.reward_psi:
            raise ConfigError(f'--pair-psi-step={self.pair_psi_step_value:g} is above --reward-psi={self.reward_psi:g}: '
                'the second sample\'s psi would be negative; lower --pair-psi-step or raise --reward-psi')
        if self.sigma_grid == 1:
            raise ConfigError('--sigma-grid=1: a grid needs at least 2 points per axis (0 = random slab points)')
        if self.sigma_grid and self.sigma_box_points:
            raise ConfigError('--sigma-box-points adds random box points to the slab points; --sigma-grid already covers '
                'the whole box: give one of them')
        if self.sigma_cutoff is not None and self.sigma_psi is None:
            raise ConfigError('--sigma-cutoff is the cutoff of --sigma-psi: give --sigma-psi too')
        if self.reward_step == 'gan':
            apart = [flag for flag, given in (('--reward-every', self.reward_every != 1),
                ('--reward-optimizer=own', self.reward_optimizer == 'own'), ('--reward-batch', self.reward_batch is not None),
                ('--reward-psi', self.reward_psi != 1), ('--reward-cutoff', self.reward_cutoff is not None),
                ('--sigma-psi', self.sigma_psi is not None)) if given]
            if apart:
                raise ConfigError(f'{apart[0]} needs --reward-step=phase: with gan the reward scores the samples of G\'s '
                    'GAN step, every step, at psi 1, on its optimizer')
        check_aggregate_lambda(self.reward_aggregate, self.aggregate_lambda)
        watching = [flag for flag, given in (('--gold-taste', self.gold_taste is not None),
            ('--stop-at-peak', self.stop_at_peak), ('--gold-study-every', self.gold_study_every)) if given]
        if watching and not self.has_panel:
            raise ConfigError(f'{watching[0]} watches the panel: give --panel-seeds')
        check_stop_options(self, patience=1)
        if self.stop_on_hacking and (not self.has_panel or not self.collateral_seeds):
            raise ConfigError('--stop-on-hacking watches the panel\'s collateral seeds: give --panel-seeds and '
                '--collateral-seeds above 0')

    @property
    def enabled(self):
        return self.reward != 'none'

    @property
    def has_panel(self):
        return self.panel_seeds.strip().lower() != 'none'

    @property
    def reward_weight(self):
        """lambda_r's schedules.Schedule: --lambda-r-start to --lambda-r-end, each --lambda-r when not given."""
        pick = lambda value: float(self.lambda_r if value is None else value)
        return Schedule(self.lambda_r_schedule, pick(self.lambda_r_start), pick(self.lambda_r_end))

    @property
    def tau_value(self):
        return TAU_DEFAULT if self.tau is None else float(self.tau)

    @property
    def pair_psi_step_value(self):
        return PAIR_PSI_STEP_DEFAULT if self.pair_psi_step is None else float(self.pair_psi_step)

    def phase_options(self):
        """The options RewardPhase reads (plain types, so they can go into training_options.json)."""
        skip = ('reward_every', 'reward_optimizer', 'panel_seeds', 'panel_psi', 'collateral_seeds', 'collateral_res',
            'stop_on_hacking', 'gold_taste', 'stop_at_peak', 'peak_margin', 'disagreement_stop', 'peak_noise',
            'peak_patience', 'gold_study_every')
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


#----------------------------------------------------------------------------
