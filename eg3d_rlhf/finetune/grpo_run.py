"""The Flow-GRPO method (and the unpaired one): runners, a run folder's snapshot, evaluation against the base, report."""

import contextlib
import dataclasses
import json
import os
import time

import dnnlib

import torch
import tqdm

from eg3d_rlhf.analysis import overoptimization, report_plots
from eg3d_rlhf.analysis.compare import compare
from eg3d_rlhf.data.annotators import parse_annotator
from eg3d_rlhf.data.preferences import LabelError
from eg3d_rlhf.data.ratings import rated_samples
from eg3d_rlhf.finetune import run_dir as runs
from eg3d_rlhf.finetune.circular_dpo import conditions_of, slabs_of
from eg3d_rlhf.finetune.circular_run import flow_network, flow_reward_path, group_row, run_folder
from eg3d_rlhf.finetune.flow_dpo import bf16_problem
from eg3d_rlhf.finetune.flow_probe import FlowProbe, curves_of
from eg3d_rlhf.finetune.flow_unpaired import RatedData, train_unpaired
from eg3d_rlhf.finetune.grpo import FlowGRPO, OnlineDPO, OnlineUnpaired
from eg3d_rlhf.finetune.options import RunError
from eg3d_rlhf.finetune.unpaired_config import STAGE_INDEX
from eg3d_rlhf.rewards import aggregate
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, shared_reward
from eg3d_rlhf.shards import Ranks, ShardError
from torch_utils import safetensors_file

#----------------------------------------------------------------------------
# A run folder holds options.json, log.txt, stats.jsonl (Flow-GRPO: a 'grpo' record per iteration: the drawn groups'
# reward, loss, policy_loss, kl, ratio, clipfrac, approx_kl, the window's start; unpaired: a 'step' record per step;
# an 'eval' record), flow-<method>.pt or .safetensors (the tuned pipeline as a flow checkpoint), eval-<method>/
# (tools/evaluate.py's comparison with the base on --eval-seeds under every condition, collateral included),
# curves.png and report.json/.html.
# Flow-GRPO's iteration i draws, under every condition, the seeds first + i G ... first + (i + 1) G - 1: a condition's
# group shares its seeds' noise with the other conditions' (as Circular-DPO's held-out ids do), never a held-out seed.
# The run's --seed sets that noise: seed 0 draws each seed's own (as a bank of it would), another seed other noise
# (grpo.draw_seed), so two training seeds are two replicates.


def reward_function(generator, reward):
    """reward(sigma [N, R, R, R], cond) -> [N]: the reward model on the slabs of finished assets."""
    return lambda sigma, cond: reward.score(slabs_of(generator, sigma, reward.grid).to(reward.device)).float().cpu()


def open_reward(cfg, device):
    """(reward, its path): --reward-model, or the bundled flow reward of --demo-annotator, by --reward-aggregate."""
    reward_path = flow_reward_path(cfg)
    try:
        reward = aggregate.aggregated(shared_reward(reward_path, device), getattr(cfg, 'reward_aggregate', 'mean'),
            getattr(cfg, 'aggregate_lambda', 1.0))
    except RewardCheckpointError as err:
        raise RunError(f'--reward-model: {err}')
    except ValueError as err:
        raise RunError(f'--reward-aggregate: {err}')
    return reward, reward_path


def run_method(method, cfg, common, desc, train, sharded=False):
    """A flow method's run: the network and reward, a new run folder outdir/NNNNN-desc with options.json (a dry run
    prints them and stops), then train(generator, reward, run_dir, save, reward_path, ranks) -> the report's summary,
    whose result is printed. save(pipeline, info, name=None) writes the run's snapshot (or run_dir/name) as a flow
    checkpoint in the base's format. A sharded method runs under torchrun too: rank 0 writes the folder and returns the
    summary, the others None."""
    try:
        ranks = Ranks(cuda=common.device == 'cuda')
    except ShardError as err:
        raise RunError(str(err)) from None
    if ranks.size > 1 and not sharded:
        ranks.close()
        raise RunError(f'--method={method} runs as one process; start it without torchrun')
    return ranks.finish(lambda: run_ranks(method, cfg, common, desc, train, ranks))


def run_ranks(method, cfg, common, desc, train, ranks):
    """run_method() in each process of the job (one outside torchrun)."""
    device = common.device if ranks.size == 1 else str(ranks.device(torch.device(common.device)))
    network, family = flow_network(common.resume)
    reward, reward_path = open_reward(cfg, device)
    options = dict(method=method, network=network, reward_model=reward_path, seed=common.seed, device=common.device,
        processes=ranks.size, **{k: v for k, v in dataclasses.asdict(cfg).items() if k != 'reward_model'})
    run_dir = run_folder(cfg, common, ranks, options, desc + (f'-{common.desc}' if common.desc else ''))
    options['run_dir'] = run_dir
    if ranks.main and (common.get('verbose') or common.dry_run):
        print(json.dumps(options, indent=2))
    if common.dry_run:
        if ranks.main:
            print('Dry run; exiting.')
        return None
    if ranks.main:
        print(f'Options: {os.path.join(run_dir, "options.json")} (--verbose prints them)')
    with runs.log_to(os.path.join(run_dir, 'log.txt')) if ranks.main else contextlib.nullcontext():
        generator = family.load(network, device)
        ext = '.safetensors' if safetensors_file.is_safetensors(network) else '.pt'   # The snapshot in the base's format.
        snapshot = os.path.join(run_dir, f'flow-{method}{ext}')
        save = lambda pipeline, info, name=None: family.save(snapshot if name is None else
            os.path.join(run_dir, name + ext), generator.with_pipeline(pipeline), info)
        try:
            torch.manual_seed(common.seed)
            summary = train(generator, reward, run_dir, save, reward_path, ranks)
        except (OSError, ValueError) as err:
            raise RunError(str(err).splitlines()[0])
        if summary is None:                             # A rank other than 0.
            return None
        row = summary.get('eval')
        if summary['alarm']:
            print(summary['alarm'])
        if row and 'win_rate' in row:
            print(f'tuned preferred to the base in {row["wins"]} of {row["wins"] + row["losses"]} held-out pairs '
                f'({100 * row["win_rate"]:.1f}%, Wilson 95% {100 * row["wilson95"][0]:.1f}-{100 * row["wilson95"][1]:.1f}%, '
                f'binomial p {row["binomial_p"]:.2g})')
        print(f'{summary["seconds"]:.0f} s; snapshot: {snapshot}; report: {os.path.join(run_dir, "report.html")}')
    return summary


def evaluate(cfg, generator, policy, reward, run_dir, reward_path, method, description, log, trained, ranks=None):
    """The tuned pipeline against the generator's own on --eval-seeds under every condition (compare: the annotator's
    judgements, the reward change, the collateral), logged as an 'eval' record; the row, or None without seeds (and
    on torchrun ranks other than 0, which draw their share of the samples)."""
    seeds = cfg.seeds('eval_seeds')
    if not seeds:
        return None
    base = generator.with_pipeline(generator.pipeline, keep=0, draw_batch=cfg.draw_batch)
    tuned = generator.with_pipeline(policy, keep=0, draw_batch=cfg.draw_batch)
    result = compare(dict(original=base, tuned=tuned), reward, seeds, os.path.join(run_dir, f'eval-{method}'),
        taste=parse_annotator(cfg.eval_annotator), temperature=cfg.temperature, annotator_res=cfg.eval_res,
        reward_path=reward_path, ranks=ranks)
    if result is None:
        return None
    row = dict(group_row('a', result, trained), group=method, description=description)   # Circular-DPO's row.
    log(dict(kind='eval', **row))
    return row


def finished(policy):
    for module in policy.modules():
        module.eval().requires_grad_(False)
    return policy

#----------------------------------------------------------------------------

def run(cfg, common):
    """Flow-GRPO (or online DPO) of the flow checkpoint at common.resume ('bundled-flow' or None: the bundled flow
    model) in a new run folder under common.outdir; the report's summary (None for a dry run)."""
    if cfg.bf16 and bf16_problem(common.device):
        raise RunError(bf16_problem(common.device))
    return run_method('grpo', cfg, common, f'flow-{cfg.objective}-{cfg.grpo_stages}',
        lambda generator, reward, run_dir, save, reward_path, ranks: train(cfg, generator, reward, run_dir, save,
            reward_path, common.seed, ranks), sharded=True)


def trainer_of(cfg, policy, reward, settings, ranks=None):
    """The trainer of cfg.objective on `policy` with reward(sigma, cond) -> [N]."""
    if cfg.objective == 'online-dpo':
        return OnlineDPO(policy, reward, settings, cfg.online_beta, cfg.online_loss_type, ranks=ranks)
    if cfg.objective in ('online-dro', 'online-kto'):
        return OnlineUnpaired(policy, reward, settings, cfg.online_beta, cfg.objective.split('-')[1], ranks=ranks)
    return FlowGRPO(policy, reward, settings, ranks=ranks)


def train(cfg, generator, reward, run_dir, save, reward_path, seed=0, ranks=None):
    """The iterations on a copy of the generator's pipeline, its snapshot, the evaluation and the report; seed: the
    run's training seed (GRPOSettings.seed). Under torchrun (ranks) every rank trains on its share of each iteration
    (FlowGRPO) and draws its share of the evaluation; rank 0 alone probes and writes, and the others return None."""
    start = time.time()
    main = ranks is None or ranks.main
    log = runs.StatsLog(run_dir) if main else Unlogged()
    policy = generator.pipeline.frozen_copy()                  # Tuned; the generator's own stays the base.
    settings = dataclasses.replace(cfg.settings(), seed=int(seed))
    trainer = trainer_of(cfg, policy, reward_function(generator, reward), settings, ranks)
    conditions = conditions_of(generator)
    trainer.mine(len(conditions))                       # Refused here when the processes outnumber the conditions.
    first, state_path = cfg.first_train_seed, os.path.join(run_dir, STATE)
    if cfg.resume_run:
        resume(trainer, log, state_path)
        if main:
            print(f'Resuming {run_dir} after iteration {trainer.iteration} of {cfg.grpo_iterations}')
    probe = None if not cfg.probe_every or not main else FlowProbe(generator, reward, cfg.seeds('probe_seeds'),
        cfg.gold_taste, cfg.reward_aggregate, cfg.aggregate_lambda, batch=cfg.draw_batch)
    if probe is not None and trainer.iteration == 0:    # The start: the policy is the base.
        log(dict(kind='probe', iteration=0, **probe.row(policy, generator.pipeline)))
    stopped = lambda: next((r for r in log.records if r['kind'] == 'stop'), None)
    agreed = lambda value: value if ranks is None else ranks.broadcast(value)      # Rank 0's decision, on every rank.
    for i in tqdm.trange(trainer.iteration, cfg.grpo_iterations if agreed(stopped()) is None else trainer.iteration,
            desc=cfg.objective, unit='iteration', disable=not main):
        group = list(range(first + i * cfg.group_size, first + (i + 1) * cfg.group_size))
        stats = trainer.step(conditions, [group] * len(conditions))
        log(dict(kind='grpo', iteration=i, seeds=[group[0], group[-1]], **stats))
        if probe is not None and (i + 1) % cfg.probe_every == 0:
            log(dict(kind='probe', iteration=i + 1, **probe.row(policy, generator.pipeline)))
            if cfg.stop_at_peak and peak_kept(log.records) == i + 1:    # The best gold so far: what a stop returns.
                save(policy, dict(method='grpo', objective=cfg.objective, gold_peak_iteration=i + 1,
                    options=dataclasses.asdict(cfg)), name=PEAK)
            reason = cfg.peak_reason([r for r in log.records if r['kind'] == 'probe']) if cfg.stop_at_peak else None
            if reason is not None:                      # --stop-at-peak: the run ends with this iteration's policy.
                log(dict(kind='stop', iteration=i + 1, reason=reason))
                tqdm.tqdm.write(f'Stopped after iteration {i + 1}: {reason}')
        halt = agreed(stopped() is not None)
        if main and cfg.snap_iterations and ((i + 1) % cfg.snap_iterations == 0 or i + 1 == cfg.grpo_iterations or halt):
            with dnnlib.util.atomic_write(state_path, 'wb') as f:
                torch.save(dict(trainer.state_dict(), records=len(log.records), rng=torch.get_rng_state()), f)
        if halt:
            break
    policy = finished(trainer.finish())
    if main:
        save(policy, dict(method='grpo', objective=cfg.objective, options=dataclasses.asdict(cfg)))
    row = evaluate(cfg, generator, policy, reward, run_dir, reward_path, 'grpo',
        f'{cfg.objective}, {cfg.grpo_stages} stage(s)', log, time.time() - start, ranks)
    if not main:
        return None
    records = log.records
    steps = [r for r in records if r['kind'] == 'grpo']
    report_plots.plot_grpo_curves(records, os.path.join(run_dir, 'curves.png'))
    pictures = (['eval-grpo/before_after.png'] if row else []) + ['curves.png']
    summary = dict(alarm=row.get('alarm') if row else None, options=dataclasses.asdict(cfg),
        network=generator.identity()['network'], reward_model=reward_path, aggregate=cfg.reward_aggregate,
        iterations=[{k: r[k] for k in ('iteration', 'reward_mean', 'reward_std', 'kl', 'clipfrac', 'pairs') if k in r}
            for r in steps], eval=row, seconds=time.time() - start)
    drawn = cfg.group_size * len(conditions)            # Samples an iteration draws: kimg along the curves.
    curves = curves_of([(r['iteration'] * drawn / 1000, r) for r in records if r['kind'] == 'probe'])
    if len(curves) > 1:
        summary['proxy_gold'] = dict(curves.summary(cfg.peak_margin, cfg.disagreement_stop, noise=cfg.peak_noise,
            patience=cfg.peak_patience), rows=curves.state(), gold_taste=cfg.gold_taste, aggregate=cfg.reward_aggregate,
            stopped=stopped(), peak_kept=peak_kept(log.records) if cfg.stop_at_peak else None)
        overoptimization.plot_curves(summary['proxy_gold'], os.path.join(run_dir, 'proxy_gold.png'),
            gold_name=cfg.gold_taste or 'gold', distance_name='velocity RMS from the base model, all stages')
        pictures.append('proxy_gold.png')
    headline = [('reward of the drawn groups', f'{steps[0]["reward_mean"]:+.3f} at iteration 0, '
        f'{steps[-1]["reward_mean"]:+.3f} at the last')]
    if stopped():
        headline.append(('--stop-at-peak', f'stopped after iteration {stopped()["iteration"]}: {stopped()["reason"]}'))
    if cfg.stop_at_peak and peak_kept(records) is not None:
        headline.append(('gold peak kept', f'{PEAK}: the policy after iteration {peak_kept(records)}'))
    if row and 'win_rate' in row:
        headline.append(('held-out pairs', f'{cfg.eval_annotator} prefers the tuned model in {row["wins"]} of '
            f'{row["wins"] + row["losses"]}'))
    report_plots.write_report(run_dir, TITLES[cfg.objective], summary, pictures, headline=headline)
    return summary


TITLES = {'grpo': 'Flow-GRPO', 'online-dpo': 'Online Flow-DPO', 'online-dro': 'Online DRO', 'online-kto': 'Online KTO'}
STATE = 'state.pt'              # --snap-iterations' state of a run: tensors, numbers and strings (weights_only).
PEAK = 'gold-peak'              # --stop-at-peak with gold: the best gold probe's policy (in the base's format).


def peak_kept(records):
    """The iteration of the probe with the best gold so far (after the start), else None (no gold, or the start's
    is the best)."""
    probes = [r for r in records if r['kind'] == 'probe' and r.get('gold') is not None]
    if len(probes) < 2:
        return None
    best = max(probes, key=lambda r: r['gold'])
    return best['iteration'] if best['iteration'] > 0 else None


class Unlogged:
    """The stats log of a rank other than 0: nothing kept or written."""
    records = ()

    def __call__(self, record):
        pass

    def keep(self, count):
        pass


def resume(trainer, log, path):
    """The trainer, the stats log and the global random state as `path` (a run's state.pt) left them; RunError of
    one line naming the file when it is missing or not a state of this run."""
    if not os.path.isfile(path):
        raise RunError(f'--resume-run: {path} is missing; a run writes it with --snap-iterations')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
        trainer.load_state_dict(state)
        log.keep(int(state['records']))
        torch.set_rng_state(state['rng'])
    except Exception as err: # pylint: disable=broad-except  (Any damage, any shape: the file is untrusted.)
        raise RunError(f'--resume-run: {path} is not a state of this run ({dnnlib.util.error_line(err)}); start the '
            'run again') from None

#----------------------------------------------------------------------------

def run_unpaired(cfg, common):
    """A flow stage trained from a ratings file by an unpaired loss (DRO, KTO) in a new run folder under
    common.outdir; the report's summary (None for a dry run)."""
    try:
        rated = rated_samples(cfg.ratings, cfg.criterion)
    except (LabelError, OSError) as err:
        raise RunError(f'--ratings: {err}')
    try:
        data = RatedData.from_ratings(rated)
    except (ValueError, OSError) as err:
        raise RunError(f'--ratings: {str(err).splitlines()[0]}')
    return run_method('unpaired', cfg, common, f'flow-{cfg.unpaired_loss}-{cfg.unpaired_stage}',
        lambda generator, reward, run_dir, save, reward_path, ranks: train_rated(cfg, data, generator, reward, run_dir,
            save, reward_path, common.seed))


def train_rated(cfg, data, generator, reward, run_dir, save, reward_path, seed=0):
    """The unpaired steps on a copy of the generator's pipeline, its snapshot, the evaluation and the report; seed:
    the run's training seed (its batches, noise and flow times)."""
    start = time.time()
    log = runs.StatsLog(run_dir)
    policy = generator.pipeline.frozen_copy()
    index = STAGE_INDEX[cfg.unpaired_stage] % len(policy.stages)
    bar = tqdm.tqdm(total=cfg.unpaired_steps, desc=cfg.unpaired_loss, unit='step')
    values = train_unpaired(policy, generator.pipeline.frozen_copy(), index, data, cfg.unpaired_steps,
        cfg.unpaired_batch, cfg.unpaired_lr, cfg.unpaired_beta, cfg.unpaired_loss, cfg.good_above, seed=int(seed),
        log=lambda record: (log(dict(kind='step', **record)), bar.update()))
    bar.close()
    policy = finished(policy)
    save(policy, dict(method='unpaired', loss=cfg.unpaired_loss, options=dataclasses.asdict(cfg)))
    row = evaluate(cfg, generator, policy, reward, run_dir, reward_path, 'unpaired',
        f'{cfg.unpaired_loss} on {cfg.criterion} ratings, {cfg.unpaired_stage} stage', log, time.time() - start)
    report_plots.plot_dpo_curves([dict(r, phase=cfg.unpaired_loss, stage=index, method=cfg.unpaired_loss)
        for r in log.records if r['kind'] == 'step'], os.path.join(run_dir, 'curves.png'))
    summary = dict(alarm=row.get('alarm') if row else None, options=dataclasses.asdict(cfg),
        network=generator.identity()['network'], reward_model=reward_path, rated=len(data.ids),
        mean_rating=float(data.ratings.mean()), baselines=values, eval=row, seconds=time.time() - start)
    headline = [('training data', f'{len(data.ids)} samples rated on {cfg.criterion}, mean {float(data.ratings.mean()):.2f}')]
    if row and 'win_rate' in row:
        headline.append(('held-out pairs', f'{cfg.eval_annotator} prefers the tuned model in {row["wins"]} of '
            f'{row["wins"] + row["losses"]}'))
    report_plots.write_report(run_dir, f'Unpaired {cfg.unpaired_loss.upper()}', summary,
        (['eval-unpaired/before_after.png'] if row else []) + ['curves.png'], headline=headline)
    return summary

#----------------------------------------------------------------------------
