"""The Flow-GRPO method: its runner, and a run folder's iterations, snapshot, evaluation against the base and report."""

import dataclasses
import json
import os
import time

import torch
import tqdm

from eg3d_rlhf.analysis import report_plots
from eg3d_rlhf.analysis.compare import compare
from eg3d_rlhf.data.annotators import parse_annotator
from eg3d_rlhf.finetune import run_dir as runs
from eg3d_rlhf.finetune.circular_dpo import conditions_of, slabs_of
from eg3d_rlhf.finetune.circular_run import flow_network, group_row
from eg3d_rlhf.finetune.flow_dpo import bf16_problem
from eg3d_rlhf.finetune.grpo import FlowGRPO, OnlineDPO
from eg3d_rlhf.finetune.options import RunError
from eg3d_rlhf.rewards import aggregate
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, shared_reward
from eg3d_rlhf.synthetic import demo
from torch_utils import safetensors_file

#----------------------------------------------------------------------------
# The run folder holds options.json, log.txt, stats.jsonl (a 'grpo' record per iteration: the drawn groups' reward,
# loss, policy_loss, kl, ratio, clipfrac, approx_kl, the window's start; an 'eval' record), flow-grpo.pt or
# .safetensors (the tuned pipeline as a flow checkpoint), eval-grpo/ (tools/evaluate.py's comparison with the base on
# --eval-seeds under every condition, collateral included), curves.png and report.json/.html.
# Iteration i draws, under every condition, the seeds first + i G ... first + (i + 1) G - 1: a condition's group
# shares its seeds' noise with the other conditions' (as Circular-DPO's held-out ids do), never a held-out seed.


def reward_function(generator, reward):
    """reward(sigma [N, R, R, R], cond) -> [N]: the reward model on the slabs of finished assets."""
    return lambda sigma, cond: reward.score(slabs_of(generator, sigma, reward.grid).to(reward.device)).float().cpu()


def run(cfg, common):
    """Flow-GRPO of the flow checkpoint at common.resume ('bundled-flow' or None: the bundled flow model) in a new run
    folder under common.outdir; the report's summary (None for a dry run)."""
    if cfg.bf16 and bf16_problem(common.device):
        raise RunError(bf16_problem(common.device))
    network, family = flow_network(common.resume)
    reward_path = cfg.reward_model or demo.flow_reward(cfg.demo_annotator)
    if reward_path is None:
        raise RunError(f'--demo-annotator={cfg.demo_annotator} has no bundled flow reward (those of '
            f'{", ".join("oracle:" + t for t in demo.FLOW_TASTES)} do); pass --reward-model')
    reward_path = os.path.abspath(reward_path)
    try:
        reward = aggregate.aggregated(shared_reward(reward_path, common.device), cfg.reward_aggregate,
            cfg.aggregate_lambda)
    except RewardCheckpointError as err:
        raise RunError(f'--reward-model: {err}')
    except ValueError as err:
        raise RunError(f'--reward-aggregate: {err}')
    desc = f'flow-{cfg.objective}-{cfg.grpo_stages}' + (f'-{common.desc}' if common.desc else '')
    options = dict(method='grpo', network=network, reward_model=reward_path, seed=common.seed, device=common.device,
        **{k: v for k, v in dataclasses.asdict(cfg).items() if k != 'reward_model'})
    run_dir = runs.next_run_dir(common.outdir or demo.OPTIONS['outdir'], desc)       # No --outdir: the demo's.
    options['run_dir'] = run_dir
    if common.get('verbose') or common.dry_run:
        print(json.dumps(options, indent=2))
    if common.dry_run:
        print('Dry run; exiting.')
        return None
    runs.create(run_dir, options)
    print(f'Options: {os.path.join(run_dir, "options.json")} (--verbose prints them)')
    with runs.log_to(os.path.join(run_dir, 'log.txt')):
        generator = family.load(network, common.device)
        ext = '.safetensors' if safetensors_file.is_safetensors(network) else '.pt'   # The snapshot in the base's format.
        save = lambda path, pipeline, info: family.save(path + ext, generator.with_pipeline(pipeline), info)
        try:
            summary = train(cfg, generator, reward, run_dir, save, common.seed, reward_path)
        except (OSError, ValueError) as err:
            raise RunError(str(err).splitlines()[0])
        row = summary.get('eval')
        if summary['alarm']:
            print(summary['alarm'])
        if row and 'win_rate' in row:
            print(f'tuned preferred to the base in {row["wins"]} of {row["wins"] + row["losses"]} held-out pairs '
                f'({100 * row["win_rate"]:.1f}%, Wilson 95% {100 * row["wilson95"][0]:.1f}-{100 * row["wilson95"][1]:.1f}%, '
                f'binomial p {row["binomial_p"]:.2g})')
        print(f'{summary["seconds"]:.0f} s; snapshot: {os.path.join(run_dir, "flow-grpo" + ext)}; report: '
            f'{os.path.join(run_dir, "report.html")}')
    return summary


def train(cfg, generator, reward, run_dir, save, seed, reward_path):
    """The iterations on a copy of the generator's pipeline, its snapshot (save(path without extension, pipeline,
    info)), the evaluation against the base and the report; returns the report's summary."""
    start = time.time()
    torch.manual_seed(seed)
    log = runs.StatsLog(run_dir)
    base = generator.with_pipeline(generator.pipeline.frozen_copy(), draw_batch=cfg.draw_batch)
    policy = generator.pipeline.frozen_copy()                  # Tuned; the generator's own stays the base.
    if cfg.objective == 'online-dpo':
        trainer = OnlineDPO(policy, reward_function(generator, reward), cfg.settings(), cfg.online_beta,
            cfg.online_loss_type)
    else:
        trainer = FlowGRPO(policy, reward_function(generator, reward), cfg.settings())
    conditions = conditions_of(generator)
    first = cfg.first_train_seed
    for i in tqdm.trange(cfg.grpo_iterations, desc='grpo', unit='iteration'):
        group = list(range(first + i * cfg.group_size, first + (i + 1) * cfg.group_size))
        stats = trainer.step(conditions, [group] * len(conditions))
        log(dict(kind='grpo', iteration=i, seeds=[group[0], group[-1]], **stats))
    policy = trainer.finish()
    for module in policy.modules():
        module.eval().requires_grad_(False)
    tuned = generator.with_pipeline(policy, keep=0, draw_batch=cfg.draw_batch)
    save(os.path.join(run_dir, 'flow-grpo'), policy, dict(method='grpo', seed=seed, options=dataclasses.asdict(cfg)))
    trained = time.time() - start
    seeds, row = cfg.seeds('eval_seeds'), None
    if seeds:
        taste = parse_annotator(cfg.eval_annotator)
        result = compare(dict(original=base, tuned=tuned), reward, seeds, os.path.join(run_dir, 'eval-grpo'),
            taste=taste, temperature=cfg.temperature, annotator_res=cfg.eval_res, reward_path=reward_path)
        row = dict(group_row('a', result, trained), group='grpo',     # Circular-DPO's row, named as this method.
            description=f'{cfg.objective}, {cfg.grpo_stages} stage(s)')
        log(dict(kind='eval', **row))
    records = log.records
    report_plots.plot_grpo_curves(records, os.path.join(run_dir, 'curves.png'))
    pictures = (['eval-grpo/before_after.png'] if row else []) + ['curves.png']
    summary = dict(alarm=row.get('alarm') if row else None, options=dataclasses.asdict(cfg), seed=seed,
        network=generator.identity()['network'], reward_model=reward_path, aggregate=cfg.reward_aggregate,
        iterations=[{k: r[k] for k in ('iteration', 'reward_mean', 'reward_std', 'kl', 'clipfrac', 'pairs') if k in r}
            for r in records if r['kind'] == 'grpo'], eval=row, trained_seconds=trained, seconds=time.time() - start)
    headline = [('reward of the drawn groups', f'{records[0]["reward_mean"]:+.3f} at iteration 0, '
        f'{records[cfg.grpo_iterations - 1]["reward_mean"]:+.3f} at the last')]
    if row and 'win_rate' in row:
        headline.append(('held-out pairs', f'{cfg.eval_annotator} prefers the tuned model in {row["wins"]} of '
            f'{row["wins"] + row["losses"]}'))
    report_plots.write_report(run_dir, 'Flow-GRPO' if cfg.objective == 'grpo' else 'Online Flow-DPO', summary, pictures,
        headline=headline)
    return summary

#----------------------------------------------------------------------------
