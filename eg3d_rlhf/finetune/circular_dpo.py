"""Circular-DPO: Flow-DPO on a pipeline's final stage, then tuned-vs-reference pairs carry it back to earlier stages."""

import collections
import copy
import dataclasses
import itertools
import time

import torch
from tqdm import tqdm

from eg3d_rlhf.data import annotators
from eg3d_rlhf.data.preferences import now, win_counts
from eg3d_rlhf.finetune.flow_dpo import PairData, pair_quality_gaps, quality_gaps, reliability_weights, train_stage
from eg3d_rlhf.generators import registry
from eg3d_rlhf.generators.flow import VolumeField
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_grid

#----------------------------------------------------------------------------
# The paper's groups (section 5.3) as recipes: how the final stage and the stages before it are trained, and which
# weights step 2's pairs get. 'bridge' is the loop: steps 2 and 3 for each earlier stage, back to front. Group j is
# the front-to-back order of the paper's appendix D, its mirror: last='bridge' with first='dpo' trains the first stage
# on the preference data, then carries it forward to each later stage in turn (forward_candidates). Group k is a's
# placebo: the same step-2 pairs, w1 and w2, with chosen and rejected swapped in a random half of them, so step 3
# trains on the loop's data without its preferences; what (a) gains over (k) is what the loop carries back.

Recipe = collections.namedtuple('Recipe', ['last', 'first', 'w1', 'w2', 'placebo'], defaults=[False])

RECIPES = dict(
    a=Recipe('dpo', 'bridge', True, True),
    b=Recipe('dpo', 'dpo', False, False),
    c=Recipe(None, 'dpo', False, False),
    d=Recipe('dpo', None, False, False),
    e=Recipe(None, 'sft', False, False),
    f=Recipe('sft', None, False, False),
    g=Recipe('dpo', 'bridge', False, True),
    h=Recipe('dpo', 'bridge', True, False),
    i=Recipe(None, None, False, False),
    j=Recipe('bridge', 'dpo', True, True),
    k=Recipe('dpo', 'bridge', True, True, placebo=True),
)

#----------------------------------------------------------------------------
# Drawing. Samples are drawn `batch` ids of one condition per pipeline pass (faster than one at a time; the same
# batches give the same bits). finish() runs the stages after `start` from a context, so two pipelines can finish
# one structure with the same noise: a seed's x0 at each stage does not depend on the pipeline.

def finish(pipeline, seeds, cond, context, start, steps, sampler):
    """The last decode (raw sigma) of stages start.. of the pipeline run on seeds from `context`."""
    for index in range(start, len(pipeline.stages)):
        run = pipeline.run_stage(index, seeds, cond, context, steps, sampler)
        context = pipeline.stages[index].decode(run.x1, context)
    return context


@torch.no_grad()
def draw_assets(generator, pipeline, seeds, condition, batch):
    """Raw sigma [len(seeds), R, R, R] of a pipeline's samples with the generator's ODE settings, `batch` per pass."""
    parts = []
    for s in range(0, len(seeds), batch):
        chunk = seeds[s : s + batch]
        cond = pipeline.condition_tensor(condition, len(chunk))
        parts.append(finish(pipeline, chunk, cond, None, 0, generator.steps, generator.sampler).cpu())
    return torch.cat(parts)


def slabs_of(generator, volumes, grid):
    """Raw sigma of volumes [N, R, R, R] on a slab grid, as the generator's field reads them."""
    return VolumeField(volumes, generator.cube_length, generator.empty_sigma).sample_grid(grid)


def conditions_of(generator):
    return [None] if generator.conditions is None else list(range(generator.conditions))

#----------------------------------------------------------------------------
# The embedded demo's preference data: samples drawn now, judged in every pair within a condition by a simulated
# annotator (its taste standardised over all of them), as a person would judge a bank.

def demo_preferences(generator, seeds, annotator, temperature, batch, res, seed=0, ranks=None):
    """(PairData, [Judgement]) of the generator's samples of seeds under every condition; under torchrun (ranks)
    each rank draws every size-th condition and rank 0 judges them all (the same data and judgements as one process)."""
    taste = annotators.parse_annotator(annotator)
    grid = slab_grid(res, cube_length=generator.cube_length, crop=SlabCrop())
    conditions = conditions_of(generator)
    with tqdm(total=len(conditions) if ranks is None else len(ranks.share(conditions)), desc='demo data',
            unit='condition') as bar:
        def draw(c):
            volumes = draw_assets(generator, generator.pipeline, seeds, conditions[c], batch)
            bar.update(1)
            return volumes
        drawn = gathered(ranks, list(range(len(conditions))), draw)
    if ranks is not None and not ranks.main:
        return ranks.broadcast(None)
    assets, ids, conds = [], [], []
    for c, condition in enumerate(conditions):
        assets.append(drawn[c])
        ids += [generator.sample_id(s, condition) for s in seeds]
        conds += [condition] * len(seeds)
    assets = torch.cat(assets)
    oracle = annotators.OracleAnnotator.from_slabs(taste, dict(zip(ids, slabs_of(generator, assets, grid).numpy())), grid,
        temperature=temperature, seed=seed)
    pairs = [(ids[i], ids[j]) for i, j in itertools.combinations(range(len(ids)), 2) if conds[i] == conds[j]]
    judgements = oracle.judgements(pairs, time=now())
    index = {k: i for i, k in enumerate(ids)}
    won = [(j.a, j.b) if j.choice == 'a' else (j.b, j.a) for j in judgements if j.choice in ('a', 'b')]
    data = PairData(assets=assets, conditions=None if conds[0] is None else torch.tensor(conds),
        chosen=torch.tensor([index[w] for w, _ in won]), rejected=torch.tensor([index[l] for _, l in won]),
        weight=torch.ones(len(won)), ids=ids)
    return (data, judgements) if ranks is None else ranks.broadcast((data, judgements))

def with_win_counts(data, judgements, tau=None):
    """(PairData, record) of labelled pairs given their assets' win counts among the judgements (a k-way ranking's:
    C = k-1..0, N = k) and, with tau, only the pairs whose w1 from them (Eq. 10-11, pair_quality_gaps) is above tau:
    the paper's w1 filter on human labels, which drops a pair whose choice contradicts the counts."""
    counts = win_counts(judgements)
    data = dataclasses.replace(data, wins=torch.tensor([counts[x][0] for x in data.ids], dtype=torch.float64),
        pool=torch.tensor([counts[x][1] for x in data.ids], dtype=torch.int64))
    w1 = pair_quality_gaps(data)
    record = dict(pairs=len(data), w1_mean=float(w1.mean()), tau=tau)
    if tau is not None:
        keep = w1 > tau
        if not keep.any():
            raise ValueError(f'--labels-w1-tau={tau} keeps none of the {len(data)} labelled pairs (w1 up to '
                f'{float(w1.max()):.3f}); lower it')
        data = data.select(keep)
        record.update(kept=int(keep.sum()), dropped=int((~keep).sum()))
    return data, record

#----------------------------------------------------------------------------
# Step 2 for stage `index`: per condition, the policy draws structures (stages 0..index) from the bridge seeds, and
# the policy and the reference each finish every structure (same noise), giving k = len(seeds) tuned and as many
# reference candidates. The reward scores all N = 2k; w1 of each (tuned i, reference j) pair comes from the win
# counts among the N (quality_gaps), w2 from the reward gap over the kept pairs (reliability_weights).
# The trained stage learns from what it drew (PairData.drawn: its x1 and the context it started from), not from
# its encoding of the finished asset: a tuned final stage that empties some of the structure's voxels would
# otherwise show the structure stage smaller structures on the tuned (chosen) side only, and teach it to shrink.

def structure(pipeline, seeds, cond, stop, generator):
    """(decode of stages 0..stop-1, that is what stage `stop` starts from (None for stop = 0); stage stop-1's x1 and
    the context it started from (None, None for stop = 0)) of a pipeline run on seeds."""
    context = x1 = before = None
    for i in range(stop):
        run = pipeline.run_stage(i, seeds, cond, context, generator.steps, generator.sampler)
        before, x1 = context, run.x1
        context = pipeline.stages[i].decode(run.x1, context)
    return context, x1, before


def as_cpu(tensor):
    return None if tensor is None else tensor.cpu()


def gathered(ranks, units, work):
    """{unit: work(unit)} of every unit, each done by one torchrun rank (every size-th) and gathered on all ranks; all
    done here without ranks or in a one-process run."""
    if ranks is None or ranks.size == 1:
        return {unit: work(unit) for unit in units}
    mine = {unit: work(unit) for unit in ranks.share(units)}
    return {unit: value for part in ranks.all_gather(mine) for unit, value in part.items()}


@torch.no_grad()
def scored_candidates(generator, reward, seeds, batch, draw, index, ranks=None):
    """Step 2's candidates for stage `index`: per condition, draw(seeds, cond) gives, for `batch` seeds at a time,
    the tuned and the reference sides, each (volumes, stage index's x1, its context); every (tuned i, reference j)
    pair with its w1 and rewards, as bridge_candidates returns them. Under torchrun (ranks) each rank draws every
    size-th (condition, chunk) and scores every size-th condition, gathered on every rank: the same passes as one
    process, so the same candidates."""
    conditions = conditions_of(generator)
    chunks = [(c, s) for c in range(len(conditions)) for s in range(0, len(seeds), batch)]
    def drawn(unit):
        chunk = seeds[unit[1] : unit[1] + batch]
        return [[as_cpu(t) for t in got] for got in draw(chunk, generator.pipeline.condition_tensor(conditions[unit[0]],
            len(chunk)))]
    sides = gathered(ranks, chunks, drawn)
    parts = [[sides[c, s][side] for side in (0, 1) for s in range(0, len(seeds), batch)] for c in range(len(conditions))]
    volumes = [torch.cat([p[0] for p in part]) for part in parts]
    scores = gathered(ranks, list(range(len(conditions))), lambda c: reward.score(slabs_of(generator, volumes[c],
        reward.grid).to(reward.device)).double().cpu())
    assets, conds, ids, chosen, rejected, w1, r_c, r_r, x1s, contexts = [], [], [], [], [], [], [], [], [], []
    for c, condition in enumerate(conditions):
        x1s.append(torch.cat([p[1] for p in parts[c]]))
        contexts.append(None if parts[c][0][2] is None else torch.cat([p[2] for p in parts[c]]))
        k, first = len(seeds), len(assets)
        gaps = quality_gaps(scores[c], k)
        for i, j in itertools.product(range(k), range(k)):
            chosen.append(first + i)
            rejected.append(first + k + j)
            w1.append(float(gaps[i, j]))
            r_c.append(float(scores[c][i]))
            r_r.append(float(scores[c][k + j]))
        assets += list(volumes[c])
        conds += [condition] * len(volumes[c])
        ids += [f'{generator.sample_id(s, condition)}-{side}' for side in ('tuned', 'reference') for s in seeds]
    drawn = {index: (torch.cat(x1s), None if contexts[0] is None else torch.cat(contexts))}
    data = PairData(assets=torch.stack(assets), conditions=None if conds[0] is None else torch.tensor(conds),
        chosen=torch.tensor(chosen), rejected=torch.tensor(rejected), weight=torch.ones(len(chosen)), ids=ids,
        drawn=drawn)
    return dict(data=data, w1=torch.tensor(w1), r_chosen=torch.tensor(r_c), r_rejected=torch.tensor(r_r))


def bridge_candidates(generator, policy, reference, index, reward, seeds, batch, ranks=None):
    """PairData of every (tuned, reference) pair of step 2 for stage `index` (weight 1; both sides keep the
    structure the policy drew, in .drawn), and per pair its w1 and the two rewards: dict(data, w1, r_chosen,
    r_rejected); under torchrun (ranks) drawn and scored in shares (scored_candidates)."""
    def draw(chunk, cond):
        context, x1, before = structure(policy, chunk, cond, index + 1, generator)
        return [(finish(pipe, chunk, cond, context, index + 1, generator.steps, generator.sampler), x1, before)
            for pipe in (policy, reference)]
    return scored_candidates(generator, reward, seeds, batch, draw, index, ranks)

#----------------------------------------------------------------------------
# The front-to-back order (appendix D), the loop's mirror, for stage `index` >= 1 once the stages before it are
# tuned: per condition, the tuned candidates are the policy's stages 0..index-1 and the reference ones the
# reference's, each finished by the policy's stages index.. with the same seeds (same noise); the reward scores all
# 2k and the pairs get w1 and w2 as in the loop. The appendix gives only this (assets drawn from the optimised and
# the original first stage, ranked and selected); the rest is the loop's, mirrored.

def forward_candidates(generator, policy, reference, index, reward, seeds, batch, ranks=None):
    """Step 2's candidates of the front-to-back order for stage `index` (>= 1), as bridge_candidates returns them."""
    if not 1 <= index < len(policy.stages):
        raise ValueError(f'front to back carries to stages 1..{len(policy.stages) - 1}, got {index}')
    def draw(chunk, cond):
        sides = []
        for pipe in (policy, reference):
            before = structure(pipe, chunk, cond, index, generator)[0]
            run = policy.run_stage(index, chunk, cond, before, generator.steps, generator.sampler)
            context = policy.stages[index].decode(run.x1, before)
            sides.append((finish(policy, chunk, cond, context, index + 1, generator.steps, generator.sampler),
                run.x1, before))
        return sides
    return scored_candidates(generator, reward, seeds, batch, draw, index, ranks)


def bridge_pairs(candidates, tau, use_w1=True, use_w2=True, mirror=False, placebo_seed=None):
    """(PairData, record) of step 2's kept pairs: w1 > tau (every pair without w1), weighted by w2 (1 without), and
    with mirror each one's mirror image too (PairData.mirrored); the record's `trained` counts the pairs returned.
    With placebo_seed, chosen and rejected trade places in a random half of the kept pairs (record `swapped`), each
    pair keeping its w2: the same data without its preferences."""
    keep = candidates['w1'] > tau if use_w1 else torch.ones(len(candidates['w1']), dtype=torch.bool)
    data = candidates['data'].select(keep)
    record = dict(candidates=len(candidates['data'].assets), pairs=len(keep), kept=int(keep.sum()),
        dropped=int((~keep).sum()), w1=candidates['w1'].tolist(), tau=tau, use_w1=use_w1, use_w2=use_w2,
        reward_gap=(candidates['r_chosen'] - candidates['r_rejected']).tolist())
    if not len(data):
        raise ValueError(f'step 2 kept no pair (all {len(keep)} have w1 <= {tau}): the tuned final stage is not '
            'better than the reference by the reward; train it longer or lower --w1-tau')
    if use_w2:
        data.weight = reliability_weights(candidates['r_chosen'][keep], candidates['r_rejected'][keep]).float()
    record['w2'] = data.weight.tolist()
    if placebo_seed is not None:
        swap = torch.rand(len(data), generator=torch.Generator().manual_seed(placebo_seed)) < 0.5
        chosen, rejected = data.chosen, data.rejected
        data.chosen, data.rejected = torch.where(swap, rejected, chosen), torch.where(swap, chosen, rejected)
        record['swapped'] = int(swap.sum())
    data = data.mirrored() if mirror else data
    record['trained'] = len(data)
    return data, record

#----------------------------------------------------------------------------

def phase_name(key):
    """'last-dpo-0/bridge-0-0-w1-w2' of a training history (a tuple of name tuples)."""
    return '/'.join('-'.join(map(str, name)) for name in key)


class GroupStopped(Exception):
    """--stop-at-peak ended the history `key`: the group's pipeline is the one trained there."""

    def __init__(self, pipeline, key):
        super().__init__(phase_name(key))
        self.pipeline, self.key = pipeline, key


class CircularDPO:
    """Runs the groups of RECIPES on one preference data set from one base FlowGenerator. Training histories that
    groups share (the final stage's DPO of a, b, d, g and h; step 2's candidates of a, g and h; the first stage's
    DPO of c and j) run once."""

    def __init__(self,
        config,                     # CircularDPOConfig.
        generator,                  # FlowGenerator of the base model; its pipeline is every group's reference.
        data,                       # PairData: the preference data of the final stage (and of b, c, e's first stages).
        reward,                     # rewards.contract.Reward scoring step 2's candidates.
        seed        = 0,            # Seed of the training steps' pairs, times and noise.
        log         = None,         # log(record) of every step, bridge and phase (stats.jsonl).
        ranks       = None,         # shards.Ranks of a torchrun job: steps' pairs and step 2's draws shared.
        state       = None,         # circular_state.RunState: state.pt written during training, or read to resume.
        probe       = None,         # flow_probe.FlowProbe measured every config.probe_every steps of each phase.
    ):
        if not registry.has(generator, 'stages'):
            raise ValueError(f'Circular-DPO aligns a generator with stages (a flow pipeline), got {type(generator).__name__}')
        if len(generator.pipeline.stages) < 2 and any(RECIPES[g].first for g in config.groups):
            raise ValueError('a one-stage pipeline has no earlier stage: only groups d, f and i apply')
        self.cfg, self.generator, self.data, self.reward, self.seed = config, generator, data, reward, int(seed)
        self.reference = generator.pipeline.frozen_copy()
        self.log = log or (lambda record: None)
        self.memo, self.bridges = {}, {}
        self.histories = {}                             # Group: the phase names of its training history, in order.
        self.ranks, self.state, self.probe = ranks, state, probe
        self.start_probe, self.probe_rows = None, {}    # The probe before training; phase name: its probes' rows.
        self.stopped = {}                               # Phase key: dict(step, reason) where --stop-at-peak ended it.
        if state is not None:
            state.restore(self)

    def _phase(self, history, pipeline, name, train):
        """The pipeline after `train(copy)` under the key history + (name,), trained once per key."""
        key = history + (name,)
        if key not in self.memo:
            policy = copy.deepcopy(pipeline)
            start = time.time()
            train(policy, key)
            self.log(dict(kind='phase', phase=phase_name(key), seconds=time.time() - start))
            self.memo[key] = policy
        if key in self.stopped:                         # --stop-at-peak ended this history here.
            raise GroupStopped(copy.deepcopy(self.memo[key]), key)
        return copy.deepcopy(self.memo[key]), key

    def _probe(self, policy, key, stage, steps, last):
        """Probe the policy after `steps` steps of phase `key`, log and keep the row; True (the phase ends) when
        --stop-at-peak's rule fires on the curve of the phase's history so far."""
        row = self.probe.row(policy, self.reference)
        self.log(dict(kind='probe', phase=phase_name(key), stage=stage, step=steps,
            pairs=steps * self.cfg.stage_batch(last), **row))
        self.probe_rows.setdefault(phase_name(key), []).append(row)
        reason = self.peak_reason(key) if self.cfg.stop_at_peak and self.start_probe is not None else None
        if reason is None:
            return False
        self.stopped[key] = dict(step=steps, reason=reason)
        self.log(dict(kind='stop', phase=phase_name(key), stage=stage, step=steps, reason=reason))
        return True

    def peak_reason(self, key):
        """The stop rule's sentence (cfg.peak_reason) on the probes of the start and of each phase of `key` in order
        (the probe it names counts along that history), else None."""
        rows = [self.start_probe] + [r for i in range(len(key)) for r in self.probe_rows.get(phase_name(key[:i + 1]), [])]
        return self.cfg.peak_reason(rows)

    def _train(self, policy, index, data, method, key, round):
        cfg, stage, phase, state = self.cfg, policy.stages[index].name, phase_name(key), self.state
        last = index == len(policy.stages) - 1
        snapshot = None if state is None else lambda step, training: state.step_done(self, key, step, cfg.dpo_steps, training)
        with tqdm(total=cfg.dpo_steps, desc=f'{phase}', unit='step', leave=False) as bar:
            train_stage(policy, self.reference, index, data, cfg.dpo_steps, cfg.stage_batch(last), cfg.stage_lr(last),
                seed=self.seed * 1000 + round, loss_type=cfg.stage_loss(method, last),
                label_smoothing=cfg.label_smoothing, progress=bar.update, **cfg.stage_options(method, last=last),
                log=lambda r: self.log(dict(kind='step', phase=phase, stage=stage, method=method, round=round, **r)),
                ranks=self.ranks, snapshot=snapshot, start=None if state is None else state.start_of(key),
                probe=None if self.probe is None else lambda p, steps: self._probe(p, key, stage, steps, last),
                probe_every=cfg.probe_every)

    def _candidates(self, history, policy, index):
        """Step 2's candidates for stage `index` after a training history, drawn and scored once."""
        if history not in self.bridges:
            start = time.time()
            self.bridges[history] = bridge_candidates(self.generator, policy, self.reference, index, self.reward,
                self.cfg.seeds('bridge_seeds'), self.cfg.draw_batch, self.ranks)
            self.log(dict(kind='phase', phase=phase_name(history + (('candidates', index),)), seconds=time.time() - start))
        return self.bridges[history]

    def _forward_candidates(self, history, policy, index):
        """The front-to-back order's candidates for stage `index` after a training history, drawn and scored once."""
        key = history + (('forward', index),)
        if key not in self.bridges:
            start = time.time()
            self.bridges[key] = forward_candidates(self.generator, policy, self.reference, index, self.reward,
                self.cfg.seeds('bridge_seeds'), self.cfg.draw_batch, self.ranks)
            self.log(dict(kind='phase', phase=phase_name(history + (('forward-candidates', index),)),
                seconds=time.time() - start))
        return self.bridges[key]

    def front_to_back(self, recipe):
        """Group j's pipeline (appendix D): per round, the first stage by recipe.first on the preference data, then
        each later stage in forward order by DPO on pairs of assets drawn with and without the stages tuned so far."""
        cfg, pipeline, history = self.cfg, self.reference, ()
        for round in range(cfg.rounds):
            pipeline, history = self._phase(history, pipeline, ('first', recipe.first, 0, round),
                lambda p, phase: self._train(p, 0, self.data, recipe.first, phase, round))
            for index in range(1, len(pipeline.stages)):
                candidates = self._forward_candidates(history, pipeline, index)
                try:
                    pairs, record = bridge_pairs(candidates, cfg.w1_tau, recipe.w1, recipe.w2, cfg.mirror_pairs)
                except ValueError as err:
                    raise ValueError(f'front to back: {str(err).split(":")[0]}: the tuned earlier stages do not '
                        'make better assets by the reward; train them longer or lower --w1-tau') from None
                name = ('forward', index, round, 'w1' if recipe.w1 else 'no_w1', 'w2' if recipe.w2 else 'no_w2')
                if history + (name,) not in self.memo:
                    self.log(dict(kind='bridge', order='front-to-back', phase=phase_name(history + (name,)),
                        round=round, stage=pipeline.stages[index].name, **record))
                pipeline, history = self._phase(history, pipeline, name,
                    lambda p, phase: self._train(p, index, pairs, 'dpo', phase, round))
        return pipeline, history

    def tuned(self, group):
        """The pipeline of one group (a FlowPipeline; the base's frozen copy for i); with --stop-at-peak, the pipeline
        where its history stopped."""
        try:
            return self._tuned(group)
        except GroupStopped as stopped:
            self.histories[group] = [phase_name(stopped.key[:i + 1]) for i in range(len(stopped.key))]
            return stopped.pipeline

    def _tuned(self, group):
        recipe, cfg = RECIPES[group], self.cfg
        if recipe.last == 'bridge':
            pipeline, history = self.front_to_back(recipe)
            self.histories[group] = [phase_name(history[:i + 1]) for i in range(len(history))]
            return pipeline
        pipeline, history, last = self.reference, (), len(self.reference.stages) - 1
        # With the loop, each round trains the final stage further, then bridges; without it, rounds only repeat.
        for round in range(cfg.rounds):
            if recipe.last:
                pipeline, history = self._phase(history, pipeline, ('last', recipe.last, round),
                    lambda p, phase: self._train(p, last, self.data, recipe.last, phase, round))
            if recipe.first in ('dpo', 'sft'):
                for index in range(last):
                    pipeline, history = self._phase(history, pipeline, ('first', recipe.first, index, round),
                        lambda p, phase: self._train(p, index, self.data, recipe.first, phase, round))
            if recipe.first == 'bridge':
                for index in reversed(range(last)):
                    candidates = self._candidates(history, pipeline, index)
                    pairs, record = bridge_pairs(candidates, cfg.w1_tau, recipe.w1, recipe.w2, cfg.mirror_pairs,
                        placebo_seed=(self.seed * 1000 + round) * 16 + index if recipe.placebo else None)
                    name = ('bridge', index, round, 'w1' if recipe.w1 else 'no_w1', 'w2' if recipe.w2 else 'no_w2') + \
                        (('placebo',) if recipe.placebo else ())
                    if history + (name,) not in self.memo:
                        self.log(dict(kind='bridge', phase=phase_name(history + (name,)), round=round,
                            stage=pipeline.stages[index].name, **record))
                    pipeline, history = self._phase(history, pipeline, name,
                        lambda p, phase: self._train(p, index, pairs, 'dpo', phase, round))
        self.histories[group] = [phase_name(history[:i + 1]) for i in range(len(history))]
        return pipeline

#----------------------------------------------------------------------------
