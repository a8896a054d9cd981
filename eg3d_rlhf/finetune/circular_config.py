"""Circular-DPO's options: one config object with help text and validation, from which train.py's flow flags come."""

import dataclasses
import typing

from eg3d_rlhf.analysis import overoptimization
from eg3d_rlhf.data.annotators import parse_annotator, taste_names
from eg3d_rlhf.finetune import lora, losses
from eg3d_rlhf.finetune.options import (ConfigError, MethodConfig, check_aggregate_lambda, check_stop_options,
    flag_name, flags_of, option)
from eg3d_rlhf.generators.base import seed_ranges
from eg3d_rlhf.rewards.aggregate import AGGREGATES

#----------------------------------------------------------------------------
# Each field is one setting of `python train.py --generator=flow --method=circular-dpo`, stated once. The embedded
# demo (no --labels) draws its own preference data with the fields' defaults, so they are sized for a 2-core CPU.
# --reward-model is shared with the EG3D reward phase (train.py declares it once); the runner reads it from here.

GROUPS = dict(
    a='Circular-DPO: final stage by DPO, then the loop carries it to the first stage (w1 filter, w2 weights)',
    b='both stages by DPO on the preference data, independently, without the loop',
    c='first stage only, DPO on the preference data',
    d='final stage only, DPO on the preference data',
    e='first stage only, supervised fine-tuning on the preferred samples',
    f='final stage only, supervised fine-tuning on the preferred samples',
    g='Circular-DPO without w1 (every step-2 pair kept)',
    h='Circular-DPO without w2 (kept pairs weighted 1)',
    i='the base model, untouched',
    j='front to back (appendix D): first stage by DPO, then carried forward to the final stage (w1 filter, w2 weights)',
    k='placebo of a: its step-2 pairs with chosen and rejected swapped in a random half, so step 3 learns no preference',
)

VARIANTS = {'circular': 'a', 'independent': 'b', 'first-only': 'c', 'final-only': 'd', 'first-sft': 'e',
    'final-sft': 'f', 'no-w1': 'g', 'no-w2': 'h', 'base': 'i', 'front-to-back': 'j', 'placebo': 'k'}
NAMES = {letter: name for name, letter in VARIANTS.items()}     # The paper's letters (a-i) and ours (j, k) as aliases.


def variant_letters(text):
    """'circular,final-only' (names or letters, or all) -> 'a,d'; ConfigError for an unknown or repeated one."""
    if text == 'all':
        return text
    letters = [VARIANTS.get(v.strip(), v.strip()) for v in text.split(',')]
    if not all(g in GROUPS for g in letters) or len(set(letters)) != len(letters):
        raise ConfigError(f'--variant={text}: give all, or variants {", ".join(VARIANTS)} (or their letters a-k; '
            'one each, comma-separated)')
    return ','.join(letters)


class FlowEvaluation:
    """What the flow methods' configs share about their evaluation: LIST fields of seeds, and the annotators' check
    (their fields annotator and demo_annotator)."""

    def check_annotators(self):
        for name in ('annotator', 'demo_annotator'):
            if getattr(self, name) is not None:
                try:
                    parse_annotator(getattr(self, name))
                except ValueError as err:
                    raise ConfigError(f'{flag_name(name)}: {err}') from None

    @property
    def eval_annotator(self):
        """The annotator of the evaluation: --annotator, else --demo-annotator."""
        return self.annotator or self.demo_annotator

    def seeds(self, name):
        """The seed list of a LIST field ([] for none)."""
        value = getattr(self, name)
        return [] if value.strip().lower() == 'none' else seed_ranges(value)


@dataclasses.dataclass
class HeldOutOptions(FlowEvaluation):
    """The evaluation fields of the flow methods that learn from a reward or ratings (Flow-GRPO, unpaired)."""
    eval_seeds:     str = option('1000-1007', 'Held-out seeds (under every condition) comparing the tuned model with the base, or none', metavar='LIST')
    annotator:      typing.Optional[str] = option(None, 'Simulated annotator judging the evaluation pairs (oracle:NAME)  [default: --demo-annotator]', metavar='oracle:NAME')
    temperature:    float = option(0.5, 'Noise of the simulated annotator, in standard deviations of its taste', min=0)
    draw_batch:     int = option(8, 'Samples per pipeline pass when the evaluation draws', min=1)
    demo_annotator: str = option('oracle:proportions', 'The taste whose bundled flow reward is the default --reward-model and whose annotator judges the evaluation', metavar='oracle:NAME')
    eval_res:       int = option(128, 'Cube resolution of the slabs the evaluation\'s annotator judges', min=16, flag=False)


@dataclasses.dataclass
class ProbeOptions:
    """The proxy-vs-gold probe of the flow methods that train from a reward (Circular-DPO, Flow-GRPO)."""
    probe_every:    int = option(0, 'Every N training steps (Circular-DPO: of each phase; Flow-GRPO: iterations), and once before training, draw --probe-seeds through the whole pipeline and record the reward (members\' mean, each member, the aggregate, their disagreement), the --gold-taste and each stage\'s distance from the base model (kind "probe" in stats.jsonl; the report\'s proxy_gold); 0 = off', min=0)
    probe_seeds:    str = option('3000-3007', 'Held-out seeds (under every condition) that --probe-every draws', metavar='LIST')
    gold_taste:     typing.Optional[str] = option(None, 'A simulated taste (e.g. nose) scored on the probe\'s samples as the gold standard, beside the proxy and the distance  [default: none]',
                        choices=lambda: taste_names(), metavar='TASTE')
    stop_at_peak:   bool = option(False, 'Stop training at the first probe where the --gold-taste has passed its peak (see --peak-margin); without --gold-taste, where the members\' disagreement reaches --disagreement-stop times its start. Circular-DPO: that group\'s history trains no further phase; Flow-GRPO: the run ends there, and with a gold taste gold-peak.safetensors (or .pt) holds the policy of the best gold probe', is_flag=True)
    peak_margin:    float = option(0.2, 'Share of the gold\'s peak gain whose loss stops --stop-at-peak (a fall with the fit\'s peak behind also stops it)', min=0, below=1)
    disagreement_stop: float = option(2.0, 'With --stop-at-peak and no --gold-taste: stop when the members\' mean sd on the probe reaches this multiple of its start', above=1)
    peak_noise:     float = option(2.0, 'With --stop-at-peak and a gold taste: the gold\'s fall must also reach this many standard errors of the probe samples\' paired changes from the peak (the same seeds under every condition); 0 = any fall', min=0)
    peak_patience:  int = option(2, 'With --stop-at-peak and a gold taste: the gold rule must hold at this many probes in a row', min=1)

    def check_probe(self):
        """ConfigError for a gold taste or a stop rule without a probe, a probe without seeds, or a stop rule's
        setting without the rule."""
        if self.gold_taste is not None and not self.probe_every:
            raise ConfigError('--gold-taste is scored by the probe: give --probe-every')
        if self.probe_every and not self.seeds('probe_seeds'):
            raise ConfigError('--probe-every draws --probe-seeds: give at least one')
        if self.stop_at_peak and not self.probe_every:
            raise ConfigError('--stop-at-peak watches the probe: give --probe-every')
        check_stop_options(self, patience=2)

    def peak_reason(self, rows):
        """--stop-at-peak's sentence on probe rows (the start's first), else None: the gold passed its peak
        (overoptimization.gold_passed_peak), or without gold the members' disagreement grew."""
        noise = overoptimization.noise_of(self.peak_noise, [r.get('gold_samples') for r in rows], rows[0].get('gold_sd'),
            rows[0].get('samples'))
        rule = overoptimization.stop_rule(None if rows[0]['gold'] is None else [r['gold'] for r in rows],
            [r['disagreement'] for r in rows], [r['distance'] for r in rows], self.peak_margin, self.disagreement_stop,
            noise, self.peak_patience)
        if rule is None:
            return None
        if rule[0] == 'gold':
            return (f'the gold taste {self.gold_taste} passed its peak at probe {rule[1]}: it has lost '
                f'{self.peak_margin:.0%} of its gain since, or fell and its fit peaks behind')
        return (f'the reward members\' disagreement on the probe reached {self.disagreement_stop:g}x its start '
            f'({rows[rule[1]]["disagreement"]:.3g} against {rows[0]["disagreement"]:.3g})')


@dataclasses.dataclass
class CircularDPOConfig(ProbeOptions, FlowEvaluation, MethodConfig):
    labels:         typing.Optional[str] = option(None, 'Judgements (JSONL) of pairs of --bank samples, the preference data of step 1  [default: the demo: simulated labels of samples drawn now]', metavar='JSONL')
    bank:           typing.Optional[str] = option(None, 'Flow bank (tools/sample_bank.py) of the samples --labels judges; their asset.npz are the data', metavar='DIR')
    reward_model:   typing.Optional[str] = option(None, 'Reward checkpoint scoring step 2\'s candidates (w1, w2) and the evaluation', metavar='PT')
    ablation:       str = option('a', 'Variants to run from the same data and seeds, with a table: circular (a), independent (b: both stages by DPO, no loop), first-only (c), final-only (d), first-sft (e), final-sft (f), no-w1 (g), no-w2 (h), base (i: untouched), front-to-back (j), placebo (k: a with step 2\'s sides swapped in a random half); a comma list, or all', metavar='NAME|LIST|all', names=('variant', 'ablation'))
    loss_type:      str = option('ipo', 'Preference loss of the phases that train the final (detail) stage (finetune/losses.py): ipo (a bounded target margin of 1/(2 beta)), sigmoid (the paper\'s Flow-DPO), hinge, robust, sft',
                        choices=lambda: losses.names(needs_gap=False), names=('detail_loss_type', 'loss_type'))
    label_smoothing: float = option(0.0, 'Share of preference labels taken as flipped (sigmoid: cDPO; robust: its noise rate)', min=0, below=0.5)
    beta:           float = option(1000.0, 'beta * T of Flow-DPO in the phases that train the final stage, per value of the stage (MSE_t is a mean over its values)', min=0, names=('detail_beta', 'beta'))
    dpo_lr:         float = option(2e-4, 'Adam learning rate of the phases that train the final stage (0: a control that changes nothing)', min=0, names=('detail_lr', 'dpo_lr'))
    dpo_steps:      int = option(80, 'Adam steps per stage and round', min=1)
    dpo_batch:      int = option(8, 'Pairs per step of the phases that train the final stage', min=1, names=('detail_batch', 'dpo_batch'))
    rounds:         int = option(1, 'Rounds of steps 1-3; later rounds draw step 2\'s structures from the tuned first stage', min=1)
    bridge_seeds:   str = option('100-111', 'Step 2: seeds of the structures drawn per condition, each finished by the tuned and by the reference final stage', metavar='LIST')
    mirror_pairs:   bool = option(False, 'Train on every pair and its mirror image (both assets flipped left to right, the same choice): twice the pairs of step 1 and of every phase that trains on the preference data, and step 2\'s (tuned, reference) pairs with the structures they were drawn from; for tastes that do not tell a head from its mirror image', is_flag=True)
    w1_tau:         float = option(0.0, 'Step 2 keeps a (tuned, reference) pair only when its quality gap w1 is above this', min=-1)
    labels_w1_tau:  typing.Optional[float] = option(None, 'Step 1 keeps a --labels pair only when its w1 from the labels\' win counts (a k-way ranking\'s: tools/import_ranked.py --ranking) is above this  [default: every pair]', min=-1)
    w2_placement:   str = option('inside', 'Where w2 weights a step-2 pair: inside = it scales the logit in the sigmoid (the paper\'s Eq. 7), outside = it scales the pair\'s loss (its Algorithm 1)',
                        choices=lambda: ('inside', 'outside'))
    structure_beta: typing.Optional[float] = option(None, 'beta of the phases that train a stage before the last  [default: --detail-beta]; under IPO the target margin is 1/(2 beta)', above=0)
    structure_batch: typing.Optional[int] = option(None, 'Pairs per step of the phases that train a stage before the last  [default: --detail-batch]', min=1)
    structure_loss_type: typing.Optional[str] = option('sigmoid', 'Preference loss of the phases that train a stage before the last (None in Python: --detail-loss-type)',
                        choices=lambda: losses.names(needs_gap=False))
    structure_lr:   typing.Optional[float] = option(2e-5, 'Adam learning rate of the phases that train a stage before the last (None in Python: --detail-lr)', min=0)
    structure_t_max: float = option(0.3, 'The phases that train a stage before the last draw their flow times t from [0, this] (t = 0 is noise), where the flow lays out a structure; 1 = every t', above=0, max=1)
    sft_weight:     float = option(0.0, 'Adds this times the SFT loss of the preferred side to every DPO phase (TRL\'s rpo_alpha); 0 = off', min=0)
    lora_rank:      int = option(0, 'Train only LoRA adapters of this rank on the trained stage\'s Linear and Conv layers (peft), merged into its weights after each phase; 0 = every weight trains', min=0)
    early_stop_split: float = option(0.0, 'Hold out this share of each phase\'s pairs and stop the phase when their implicit-reward accuracy has not improved for --early-stop-patience evaluations; 0 = off', min=0, below=1)
    early_stop_patience: int = option(3, 'Evaluations without a better held-out accuracy before a phase stops (with --early-stop-split)', min=1)
    early_stop_every: int = option(10, 'Steps between held-out evaluations (with --early-stop-split)', min=1)
    precompute_ref: bool = option(False, 'Run the reference stage once over every step\'s draws (and the held-out pairs\') before each phase and train from those numbers, never calling it in training (TRL\'s precompute_ref_log_probs): the same losses and weights, bit for bit', is_flag=True)
    bf16:           bool = option(False, 'bf16 autocast of every velocity pass (policy and reference) on the CPU or a CUDA device with native bf16; weights, optimizer and loss stay float32', is_flag=True)
    snap_steps:     int = option(0, 'Write the run\'s state (state.pt in its folder: finished phases, the phase under way, every process\'s random state) every N training steps of a phase and at its end, for --resume-run; 0 = never', min=0)
    resume_run:     typing.Optional[str] = option(None, 'Go on with the run in this folder from its state.pt (written with --snap-steps), with its options and as many processes; it ends as it would have without the stop', metavar='DIR')
    eval_seeds:     str = option('1000-1007', 'Held-out seeds (under every condition) comparing each group with the base model, or none', metavar='LIST')
    reward_aggregate: str = option('mean', "How the reward ensemble's member scores rank step 2's candidates (w1, w2): mean, min (the worst member), mean-std (mean - --aggregate-lambda x sd), uwo (mean - --aggregate-lambda x variance)",
                        choices=lambda: AGGREGATES)
    aggregate_lambda: float = option(1.0, 'Weight of the members\' spread in --reward-aggregate=mean-std or uwo', min=0)
    annotator:      typing.Optional[str] = option(None, 'Simulated annotator judging the evaluation pairs (oracle:NAME)  [default: the demo\'s --demo-annotator; else none]', metavar='oracle:NAME')
    temperature:    float = option(0.5, 'Noise of the simulated annotator, in standard deviations of its taste (demo labels, evaluation)', min=0)
    draw_batch:     int = option(8, 'Samples per pipeline pass when drawing (demo data, step 2, evaluation)', min=1)
    demo_annotator: str = option('oracle:proportions', 'Demo: the simulated annotator of the preference data and the evaluation; its bundled flow reward is the default --reward-model (oracle:proportions: a large head whose nose does not stick out; oracle:nose: the nose alone)', metavar='oracle:NAME')
    # Not flags: the embedded demo's preference data and fixed parts of the evaluation.
    demo_seeds:     str = option('0-11', 'Demo: seeds drawn under every condition and judged in all pairs within a condition', metavar='LIST', flag=False)
    eval_res:       int = option(128, 'Cube resolution of the slabs the evaluation\'s annotator judges', min=16, flag=False)

    def validate(self):
        self.ablation = variant_letters(self.ablation)                  # Names become the letters runs record.
        if (self.labels is None) != (self.bank is None):
            raise ConfigError('--labels and --bank go together: the labels judge the bank\'s samples (neither: the demo)')
        self.check_annotators()
        if self.labels_w1_tau is not None and self.is_demo:
            raise ConfigError('--labels-w1-tau filters the pairs of --labels by their win counts; the demo has none')
        if self.bridge_seeds.strip().lower() == 'none':
            raise ConfigError('--bridge-seeds: step 2 needs at least one seed')
        check_aggregate_lambda(self.reward_aggregate, self.aggregate_lambda)
        self.check_probe()
        for name in ('loss_type', 'structure_loss_type'):
            if self.sft_weight and getattr(self, name) and not losses.get(getattr(self, name)).needs_rejected:
                raise ConfigError(f'--sft-weight adds SFT to a loss of pairs; {flags_of(self.field(name))[0]}={getattr(self, name)} '
                    'is SFT already')
        if self.lora_rank and not lora.available():
            raise ConfigError(lora.MISSING)

    @property
    def is_demo(self):
        return self.labels is None

    @property
    def groups(self):
        return list(GROUPS) if self.ablation == 'all' else [g for g in GROUPS if g in self.ablation.split(',')]

    @property
    def eval_annotator(self):
        """The annotator of the evaluation: --annotator, or the demo's in the demo, else None (reward deltas only)."""
        return self.annotator or (self.demo_annotator if self.is_demo else None)

    def stage_options(self, method, last=True):
        """train_stage's keyword arguments from the loss choices and anti-hacking fields, for a phase of `method`
        ('dpo' or 'sft': SFT mixing is for DPO phases) that trains the last stage or (last=False) an earlier one."""
        return dict(w2_placement=self.w2_placement, sft_weight=self.sft_weight if method == 'dpo' else 0.0,
            beta=self.beta if last or self.structure_beta is None else self.structure_beta,
            t_max=1.0 if last else self.structure_t_max,
            lora_rank=self.lora_rank, early_stop_split=self.early_stop_split,
            early_stop_patience=self.early_stop_patience, early_stop_every=self.early_stop_every,
            precompute_ref=self.precompute_ref, bf16=self.bf16)

    def stage_loss(self, method, last=True):
        """train_stage's loss_type of a phase of `method` ('dpo', or 'sft' as itself) that trains the last stage or
        (last=False) an earlier one."""
        if method != 'dpo':
            return method
        return self.loss_type if last or self.structure_loss_type is None else self.structure_loss_type

    def stage_lr(self, last=True):
        """Learning rate of a phase that trains the last stage or (last=False) an earlier one."""
        return self.dpo_lr if last or self.structure_lr is None else self.structure_lr

    def stage_batch(self, last=True):
        """Pairs a step of a phase that trains the last stage or (last=False) an earlier one."""
        return self.dpo_batch if last or self.structure_batch is None else self.structure_batch


#----------------------------------------------------------------------------
