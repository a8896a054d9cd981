"""The Circular-DPO method: its runner, and a run folder's preference data, group snapshots, evaluation, report."""

import contextlib
import dataclasses
import json
import os
import time

import numpy as np
import torch

import dnnlib
from eg3d_rlhf.analysis import collateral, overoptimization, replication, report_plots
from eg3d_rlhf.analysis.compare import compare
from eg3d_rlhf.data.annotators import parse_annotator
from eg3d_rlhf.data.bank import REDRAW, Bank
from eg3d_rlhf.data.preferences import load_judgements, write_judgements
from eg3d_rlhf.finetune import run_dir as runs
from eg3d_rlhf.finetune.circular_config import GROUPS, NAMES
from eg3d_rlhf.finetune.circular_dpo import RECIPES, CircularDPO, demo_preferences, phase_name, with_win_counts
from eg3d_rlhf.finetune.circular_state import RunState, StateError
from eg3d_rlhf.finetune.flow_dpo import PairData, bank_pairs, bf16_problem, encode_stage
from eg3d_rlhf.finetune.flow_probe import FlowProbe, group_curves
from eg3d_rlhf.finetune.options import RunError, flag_name
from eg3d_rlhf.generators import registry
from eg3d_rlhf.rewards import aggregate
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, shared_reward
from eg3d_rlhf.shards import Ranks, ShardError
from eg3d_rlhf.synthetic import demo
from torch_utils import misc, report_to, safetensors_file

#----------------------------------------------------------------------------
# The run directory (finetune/run_dir.py) holds options.json, log.txt, labels.jsonl (the demo's simulated judgements),
# stats.jsonl (a record per training step with TRL's names, per step-2 bridge with its w1 and w2, per phase with its
# time, per evaluated group), flow-<group>.pt or .safetensors (as the base checkpoint is written: a flow checkpoint of every
# stage, loadable by every tool),
# eval-<group>/ (tools/evaluate.py's report of the group against the base, its collateral included), curves.png,
# weights.png, ablation.png, collateral.png, report.json and report.html (its first line the hacking alarm, if any).

def load_preferences(cfg, generator, run_dir, seed, ranks=None):
    """(PairData, info) of the run: the bank's assets judged by --labels, or the demo's drawn and judged samples
    (their judgements written to labels.jsonl; under torchrun (ranks) drawn in shares). ValueError of one line naming
    the file when they do not fit."""
    if cfg.is_demo:
        data, judgements = demo_preferences(generator, cfg.seeds('demo_seeds'), cfg.demo_annotator, cfg.temperature,
            cfg.draw_batch, cfg.eval_res, seed=seed, ranks=ranks)
        if ranks is None or ranks.main:
            write_judgements(os.path.join(run_dir, 'labels.jsonl'), judgements)
        agree = np.mean([j.choice == j.extra['noise_free'] for j in judgements])
        info = dict(source=f'demo: {cfg.demo_annotator} at temperature {cfg.temperature}, every pair within a condition',
            judgements=len(judgements), agree_with_noise_free=float(agree))
    else:
        bank = Bank(cfg.bank)
        judgements = load_judgements(cfg.labels, known_ids=bank.ids)
        data, dropped = PairData.from_bank(bank, judgements)
        data, label_w1 = with_win_counts(data, judgements, cfg.labels_w1_tau)
        info = dict(source=f'{os.path.abspath(cfg.labels)} over {os.path.abspath(cfg.bank)}', judgements=len(judgements),
            dropped=dropped, label_w1=label_w1)
    if cfg.mirror_pairs:
        data = data.mirrored()
        info.update(mirrored=True)
    try:
        encode_stage(generator.pipeline, data.assets[:1].to(generator.device), len(generator.pipeline.stages) - 1)
    except (ValueError, RuntimeError, AssertionError) as err:
        where = cfg.bank or 'the demo data'
        raise ValueError(f'{where}: its assets do not fit this pipeline ({str(err).splitlines()[0]}); '
            'draw the bank with the same flow model') from None
    if data.conditions is not None and generator.conditions is not None and int(data.conditions.max()) >= generator.conditions:
        raise ValueError(f'{cfg.bank}: conditions up to {int(data.conditions.max())}, the model has {generator.conditions}')
    info.update(assets=len(data.assets), pairs=len(data))
    return data, info


#----------------------------------------------------------------------------

def group_row(group, summary, seconds):
    """One row of the ablation table from compare's summary."""
    pref, rc = summary['preference'], summary['reward']
    row = dict(group=group, description=GROUPS[group], reward_mean_delta=rc['mean_delta'],
        reward_mean_delta_ci95=rc['mean_delta_ci95'], seconds=seconds)
    if isinstance(pref, dict):
        row.update(win_rate=pref['win_rate'], wins=pref['wins'], losses=pref['losses'], ties=pref['ties'],
            wilson95=pref['wilson95'], binomial_p=pref['binomial_p'], noise_free_win_rate=pref['noise_free']['win_rate'],
            noise_free_wilson95=pref['noise_free']['wilson95'], noise_free_p=pref['noise_free']['binomial_p'])
    stages = summary.get('stage_consistency')
    if isinstance(stages, dict):
        row.update(structure_iou_base=stages['original']['mean'], structure_iou=stages['tuned']['mean'])
    div = summary.get('diversity')
    if isinstance(div, dict):
        row.update(diversity_ratio=div['ratio_all'])
    row.update(collateral.row_entries(summary))
    return row


def headline(rows):
    """The report's headline block: per variant, the held-out annotator's result and the reward's change."""
    out = []
    for r in rows:
        said = f'tuned preferred in {r["wins"]} of {r["wins"] + r["losses"] + r["ties"]} held-out pairs, ' if 'wins' in r else ''
        out.append((f'{NAMES[r["group"]]} ({r["group"]})', f'{said}reward change {r["reward_mean_delta"]:+.3f}'))
    return out


def fmt(value, spec='.3f'):
    return '-' if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)


def table_rows(rows):
    """The ablation table as (header, rows of strings)."""
    header = ['group', 'what', 'win rate (Wilson 95%)', 'binomial p', 'noise-free win rate', 'reward change',
        'every taste at temperature 0: tuned preferred', 'nose prominence change (world units)',
        'structure IoU (base -> tuned)', 'diversity ratio']
    body = []
    for r in rows:
        ci = r.get('wilson95')
        body.append([r['group'], r['description'],
            f'{fmt(r.get("win_rate"), ".1%")} ({fmt(ci[0], ".1%")}-{fmt(ci[1], ".1%")})' if ci else '-',
            fmt(r.get('binomial_p'), '.2g'), fmt(r.get('noise_free_win_rate'), '.1%'), f'{r["reward_mean_delta"]:+.3f}',
            *collateral.row_cells(r),
            f'{fmt(r.get("structure_iou_base"))} -> {fmt(r.get("structure_iou"))}', fmt(r.get('diversity_ratio'))])
    return header, body


def bar_cell(row):
    """'yes', 'no: what falls short', or '-' (no taste judged the run)."""
    if 'bar' not in row:
        return '-'
    return 'yes' if row['bar']['clean'] else 'no: ' + ', '.join(row['bar']['short'])


def robustness(rows, name, trained):
    """Of a seed sweep's rows (tools/sweep_circular.py --seeds, each with its bar), per value of setting `name` and
    group (in the rows' order): how many seeds' runs are clean, the trained taste's share over the seeds, the lowest
    share of any other taste and the most dents."""
    cells = {}
    for row in rows:
        if 'bar' in row:
            cells.setdefault((row.get(name), row['group']), []).append(row)
    summary = []
    for (value, group), runs_ in cells.items():
        shares = [r['collateral'][trained]['share'] for r in runs_ if trained in r['collateral']]
        others = [(r['collateral'][t]['share'], t, r['seed']) for r in runs_ for t in r['collateral'] if t != trained]
        worst = min(others, default=None)
        dents = [r['dents_deeper'] for r in runs_ if r.get('dents_deeper') is not None]
        summary.append(dict(value=value, group=group, clean=f'{sum(r["bar"]["clean"] for r in runs_)} of {len(runs_)}',
            trained=f'{min(shares):.0%}-{max(shares):.0%}' if shares else '-',
            worst=f'{worst[1]} {worst[0]:.0%} (seed {worst[2]})' if worst else '-',
            dents=f'{max(dents)}/{runs_[0]["dents_samples"]}' if dents else '-'))
    return summary


def sweep_report(rows, versus, name, per_seed, trained, sweep_dir, warning):
    """(sweep.md's text, the robustness rows, the replication table or None) of tools/sweep_circular.py's runs: `rows`
    every run's groups (each given its bar here), `versus` each run's (value, seed, versus_a), `name` the swept
    setting or None, per_seed whether a seed column is shown (--train-seeds), `warning` the dev-seeds line or None."""
    several = len({row['seed'] for row in rows}) > 1
    for row in rows:
        if trained and 'collateral' in row:
            clean, short = collateral.clears_bar(row, trained)
            row['bar'] = dict(clean=clean, short=short)
    header, body = table_rows(rows)
    named = [flag_name(name)] if name else []           # The swept setting's column, where one is swept.
    lead = lambda row: ([row[name]] if name else []) + [row['seed']] * per_seed
    header = [*named, *['seed'] * per_seed, *header, 'clean (bar)']
    body = [[*lead(row), *cells, bar_cell(row)] for row, cells in zip(rows, body)]
    text = replication.markdown_table(header, body)
    robust = robustness(rows, name, trained) if several else []
    if robust:
        text += '\n' + replication.markdown_table([*named, 'group', 'seeds clean', f'{trained} share (min-max)',
            'worst other taste (min)', 'dents (max)'], [[*([r['value']] if name else []), r['group'], r['clean'],
            r['trained'], r['worst'], r['dents']] for r in robust])
    table = replicated(versus, name, sweep_dir) if several else None
    if table:
        text += (f'\n{trained}, (a) against each group on the same held-out ids, over the training seeds:\n'
            + (f'\n{warning}\n' if warning else '') + '\n' + replication.markdown(table) + '\nResults:\n\n'
            + ''.join(f'- {c["result"]}\n' for c in table['contrasts']))
    return text, robust, table


def sweep_member(cfg, common, resuming):
    """One run of a sweep in common.outdir (the sweep folder). With resuming, a run folder there of the same options
    and seed is taken up again: a finished one's summary is read from its report.json, an unfinished one resumed from
    its state.pt (--snap-steps wrote it); without such a folder the run starts anew."""
    folder = same_run(cfg, common) if resuming else None
    if folder is not None and os.path.isfile(os.path.join(folder, 'report.json')):
        try:
            with open(os.path.join(folder, 'report.json'), encoding='utf-8') as f:
                summary = json.load(f)
            assert isinstance(summary, dict) and isinstance(summary['groups'], dict) and 'versus_a' in summary
        except (OSError, ValueError, KeyError, AssertionError) as err:
            raise RunError(f'{folder}/report.json: not a Circular-DPO report ({err}); move the folder away to run it '
                'again') from None
        print(f'Seed {common.seed}: finished in {folder}')
        return summary
    if folder is not None:
        cfg = dataclasses.replace(cfg, resume_run=folder)
    return run(cfg, common)


def same_run(cfg, common):
    """The run folder in common.outdir that ran cfg with common's seed: a finished one (report.json) first, then one
    with a state to resume (state.pt), the newest of each; None when there is neither."""
    if not os.path.isdir(common.outdir):
        return None
    network = demo.FLOW_GENERATOR if common.resume in (None, 'bundled-flow') else common.resume
    now = dict(dataclasses.asdict(cfg), seed=common.seed, network=os.path.abspath(network))
    if cfg.reward_model is None:                        # The demo's reward, set by --demo-annotator.
        del now['reward_model']
    else:
        now['reward_model'] = os.path.abspath(cfg.reward_model)
    now = json.loads(json.dumps(now))
    found = []
    for name in sorted(os.listdir(common.outdir)):
        folder = os.path.join(common.outdir, name)
        try:
            with open(os.path.join(folder, 'options.json'), encoding='utf-8') as f:
                before = json.load(f)
            assert isinstance(before, dict)
        except (OSError, ValueError, AssertionError):
            continue
        before = {k: v for k, v in before.items() if k in now}
        if resume_differences(before, now, cfg):
            continue
        rank = 2 if os.path.isfile(os.path.join(folder, 'report.json')) else 1 if os.path.isfile(
            os.path.join(folder, 'state.pt')) else 0
        if rank:
            found.append((rank, name, folder))
    return max(found)[2] if found else None


def write_sweep(sweep_dir, text, fields):
    """sweep.md (text) and sweep.json (fields and the bar) of a sweep folder, each written atomically."""
    with dnnlib.util.atomic_write(os.path.join(sweep_dir, 'sweep.md'), 'w', encoding='utf-8') as f:
        f.write(text)
    bar = dict(trained=collateral.BAR_TRAINED, others=collateral.BAR_OTHERS, dents=collateral.DENT_SHARE)
    with dnnlib.util.atomic_write(os.path.join(sweep_dir, 'sweep.json'), 'w', encoding='utf-8') as f:
        json.dump(dnnlib.util.json_safe(dict(fields, bar=bar)), f, indent=2, default=str, allow_nan=False)


def with_placebo(ablation, keep_out):
    """The --variant list (letters) with the placebo group (k) added where (a) runs with other known groups, unless keep_out."""
    groups = ablation.split(',')
    if keep_out or 'k' in groups or 'a' not in groups or len(groups) < 2 or not set(groups) <= set(GROUPS):
        return ablation
    return f'{ablation},k'


def replicated(versus, name, sweep_dir):
    """The replication table of (a) against every other group over the training seeds, per value of the swept
    setting, from each run's versus_a (value, seed, {group: {'pairs': ...}}), written into sweep_dir
    (replication.write); None when no run compared groups."""
    rows = []
    for value, seed, groups in versus:
        for group, entry in groups.items():
            contrast = (f'{flag_name(name)}={value}: ' if name else '') + f'(a) vs ({group})'
            rows += replication.records(contrast, seed, entry['pairs']['ids'], entry['pairs']['outcomes'])
    if not rows:
        return None
    table = replication.replicate(rows)
    replication.write(table, sweep_dir)
    return table

#----------------------------------------------------------------------------
# Groups against each other: every group's held-out samples share ids (seeds, conditions, noise), so group (a) and
# another group meet on each id, judged by every taste at temperature 0 (collateral.compare with the other group as
# "original": wins are ids where (a)'s sample is preferred) and measured in world units (paired intervals).

def versus_a(run_dir, groups, taste):
    """{group: collateral.compare(group's samples, (a)'s samples)} of every evaluated group but (a), from their
    eval-<group>/measures.json, each with 'pairs': the held-out ids and the trained taste's outcome on each, from
    (a)'s view (replication.preference_outcomes: what the sweeps replicate over seeds); {} without (a), another
    group or a taste."""
    if 'a' not in groups or len(groups) < 2 or not taste:
        return {}
    def load(group):
        with open(os.path.join(run_dir, f'eval-{group}', 'measures.json')) as f:
            return json.load(f)
    mine, versus = load('a'), {}
    for group in (g for g in groups if g != 'a'):
        theirs = load(group)['tuned']
        versus[group] = dict(collateral.compare(theirs, mine['tuned'], trained=taste), pairs=dict(ids=mine['ids'],
            outcomes=replication.preference_outcomes(mine['tuned'], theirs, taste)))
    return versus


def versus_summary(versus, taste):
    """The summary's entry of versus_a: per group the trained taste's test, every taste's counts, the true changes and
    the held-out pairs."""
    return {g: dict(trained=c['tastes'][taste], tastes={k: {f: v[f] for f in ('wins', 'losses', 'ties', 'binomial_p')}
        for k, v in c['tastes'].items()}, truth=c['truth'], pairs=c['pairs']) for g, c in versus.items()}


def versus_rows(versus, taste):
    """The table of versus_a: per other group, the trained taste's count and test, every taste, the true changes."""
    header = ['(a) against', f'{taste}: (a) preferred (Wilson 95%)', 'binomial p', 'ties',
        'every taste: (a) preferred', 'nose prominence, (a) minus group', 'head size, (a) minus group']
    body = []
    for group, cost in versus.items():
        r, truth = cost['tastes'][taste], cost['truth']
        low, high = r['wilson95']
        body.append([f'({group}) {GROUPS[group]}', f'{r["wins"]}/{r["wins"] + r["losses"]} ({fmt(r["win_rate"], ".1%")}, '
            f'{fmt(low, ".1%")}-{fmt(high, ".1%")})', fmt(r['binomial_p'], '.2g'), str(r['ties']),
            ', '.join(f'{name} {c["wins"]}/{c["wins"] + c["losses"]}' for name, c in cost['tastes'].items()),
            *[f'{truth[k]["change"]:+.4f} ({truth[k]["change_ci95"][0]:+.4f}..{truth[k]["change_ci95"][1]:+.4f})'
                for k in ('nose_prominence', 'head_size')]])
    return header, body

#----------------------------------------------------------------------------

def align(cfg, generator, reward, run_dir, save_snapshot, seed=0, reward_path=None, writer=None, ranks=None, state=None):
    """Run the groups of cfg on the base FlowGenerator in run_dir; save_snapshot(path, pipeline, info) writes a flow
    checkpoint; writer (torch_utils/report_to.py) gets the stats and the report's pictures. Returns the report's
    summary. Under torchrun (ranks: shards.Ranks) every rank trains on its share of each step's pairs and draws its
    share of step 2 and the evaluation, and rank 0 writes the run folder and returns the summary (the others None).
    state (circular_state.RunState) writes state.pt during training, or resumes the run from it."""
    main = ranks is None or ranks.main
    state = state or RunState(run_dir, ranks=ranks)
    log = runs.StatsLog(run_dir, writer=writer) if main else None
    if main and state.replaying:
        log.keep(state.records)
    state.log = log
    emit = state.mute(log if main else (lambda record: None))
    torch.manual_seed(seed)
    data, data_info = load_preferences(cfg, generator, run_dir, seed, ranks)
    emit(dict(kind='data', **data_info))
    probe = None if not cfg.probe_every else FlowProbe(generator, reward, cfg.seeds('probe_seeds'), cfg.gold_taste,
        cfg.reward_aggregate, cfg.aggregate_lambda, batch=cfg.draw_batch)
    trainer = CircularDPO(cfg, generator, data, aggregate.aggregated(reward, cfg.reward_aggregate, cfg.aggregate_lambda),
        seed=seed, log=emit, ranks=ranks, state=state, probe=probe)
    if probe is not None and not any(r.get('kind') == 'probe' for r in (log.records if main else [])):
        trainer.start_probe = probe.row(generator.pipeline, generator.pipeline)
        emit(dict(kind='probe', phase='start', stage=None, step=0, pairs=0, **trainer.start_probe))
    seeds = cfg.seeds('eval_seeds')
    taste = cfg.eval_annotator and parse_annotator(cfg.eval_annotator)
    keys = generator.keys(seeds) if seeds else []
    base = generator.with_pipeline(generator.pipeline, keep=len(keys), draw_batch=cfg.draw_batch)
    rows = state.rows                                   # A resumed run's finished groups are not run again.
    for group in [g for g in cfg.groups if g not in state.done]:
        group_start = time.time()
        pipeline = trainer.tuned(group)
        emit(dict(kind='history', group=group, phases=trainer.histories[group]))    # What its probe curve follows.
        info = dict(group=group, recipe=RECIPES[group]._asdict(), description=GROUPS[group], seed=seed,
            options=dataclasses.asdict(cfg))
        if main:
            save_snapshot(os.path.join(run_dir, f'flow-{group}.pt'), pipeline, info)
        trained = time.time() - group_start
        if not seeds:
            state.finished(group)
            continue
        tuned = generator.with_pipeline(pipeline, keep=0, draw_batch=cfg.draw_batch)
        summary = compare(dict(original=base, tuned=tuned), reward, seeds, os.path.join(run_dir, f'eval-{group}'),
            taste=taste, temperature=cfg.temperature, annotator_res=cfg.eval_res, reward_path=reward_path, ranks=ranks)
        row = group_row(group, summary, trained) if main else None
        if main:
            emit(dict(kind='eval', **row))
        state.finished(group, row)
    if not main:
        return None
    records = log.records

    versus = versus_a(run_dir, [r['group'] for r in rows], taste)
    alarms = [f'({r["group"]}) {r["alarm"]}' for r in rows if r['alarm']]
    summary = dict(alarm='; '.join(alarms) or None, options=dataclasses.asdict(cfg), seed=seed,
        network=generator.identity()['network'],
        reward_model=reward_path, data=data_info, groups={r['group']: r for r in rows},
        versus_a=versus_summary(versus, taste),
        bridges=[dict(phase=r['phase'], kept=r['kept'], trained=r.get('trained', r['kept']), dropped=r['dropped'],
            candidates=r['candidates'], w1_mean=float(np.mean(r['w1'])), w2_min=float(np.min(r['w2'])),
            w2_max=float(np.max(r['w2'])))
            for r in records if r['kind'] == 'bridge'],
        timing=timing(records, cfg, time.time() - log.start))
    pictures = []
    if probe is not None:
        summary['proxy_gold'] = proxy_gold(cfg, records)
        first = next((g for g, c in summary['proxy_gold'].items() if len(c['rows']['kimg']) > 1), None)
        if first is not None:
            overoptimization.plot_curves(summary['proxy_gold'][first], os.path.join(run_dir, 'proxy_gold.png'),
                gold_name=cfg.gold_taste or 'gold', distance_name='velocity RMS from the base model, all stages')
            pictures.append('proxy_gold.png')
    if any(r['kind'] == 'step' for r in records):
        report_plots.plot_dpo_curves(records, os.path.join(run_dir, 'curves.png'))
        pictures.append('curves.png')
    if any(r['kind'] == 'bridge' for r in records):
        report_plots.plot_bridge_weights([r for r in records if r['kind'] == 'bridge'], os.path.join(run_dir, 'weights.png'))
        pictures.append('weights.png')
    if rows and taste:
        report_plots.plot_win_rates(rows, os.path.join(run_dir, 'ablation.png'))
        pictures.append('ablation.png')
    if rows:
        report_plots.plot_collateral(rows, os.path.join(run_dir, 'collateral.png'))
        pictures.append('collateral.png')
    pictures = [f'eval-{r["group"]}/before_after.png' for r in rows] + pictures      # Group (a)'s first.
    tables = [('Groups against the base model', *table_rows(rows))] if rows else []
    if versus:
        tables.append(('Group (a) against each other group, on the same held-out ids', *versus_rows(versus, taste)))
    report_plots.write_report(run_dir, 'Circular-DPO', summary, pictures, tables=tables, headline=headline(rows))
    for picture in pictures:
        log.image('report/' + os.path.splitext(picture)[0], os.path.join(run_dir, picture))
    return summary


def proxy_gold(cfg, records):
    """{group: Curves.summary of the probes along its training history, with its rows, the aggregate trained on and
    the gold taste}."""
    out = {}
    for record in [r for r in records if r.get('kind') == 'history']:
        group, curves = record['group'], group_curves(records, record['phases'])
        stops = [r for r in records if r.get('kind') == 'stop' and r['phase'] in record['phases']]
        if len(curves) > 1:
            out[group] = dict(curves.summary(cfg.peak_margin, cfg.disagreement_stop, noise=cfg.peak_noise,
                patience=cfg.peak_patience), rows=curves.state(),
                stopped=stops[0] if stops else None, gold_taste=cfg.gold_taste,
                aggregate=cfg.reward_aggregate if cfg.reward_aggregate in ('mean', 'min') else
                f'{cfg.reward_aggregate} (lambda {cfg.aggregate_lambda:g})')
    return out


def timing(records, cfg, total):
    """Wall time in all, per kind of phase, and seconds per training step of each stage."""
    per_stage = {}
    steps = [r for r in records if r['kind'] == 'step']
    phases = {r['phase']: r['seconds'] for r in records if r['kind'] == 'phase'}
    for phase, seconds in phases.items():
        stage = next((s['stage'] for s in steps if s['phase'] == phase), None)
        if stage is not None:
            per_stage.setdefault(stage, []).append(seconds / cfg.dpo_steps)
    return dict(total_seconds=total, seconds_per_step={k: float(np.mean(v)) for k, v in per_stage.items()},
        phases=phases)

#----------------------------------------------------------------------------
# The runner of `train.py --generator=flow --method=circular-dpo`: a flow checkpoint (--resume, default the bundled
# one) and a reward, a run folder with the options and log, then align().

@misc.flushed_denormals()
def run(cfg, common):
    """Circular-DPO of the generator at common.resume ('bundled-flow' or None = the bundled flow model) in a new run
    folder under common.outdir; the report's summary (None for a dry run). CPU denormal floats are flushed to zero
    while it runs, set before its first parallel op (the worker threads keep the state they start with): step 3 met
    them and ran 2.4x slower; the demo's results are the same to the digit. The setting is restored after."""
    if cfg.bf16 and bf16_problem(common.device):
        raise RunError(bf16_problem(common.device))
    network, family = flow_network(common.resume)
    problem = None if cfg.labels is None else dnnlib.util.file_problem(cfg.labels)
    if problem is not None:                             # Read once the run has started: checked now.
        raise RunError(f'--labels: {problem}')
    check_preference_files(cfg)
    reward_path = flow_reward_path(cfg)
    try:
        family.conditions(network)                                  # Read as data: a damaged file fails here.
    except (OSError, ValueError) as err:
        raise RunError(f'--resume: {err}')
    reporter = runs.pick_reporter(common.get('report_to'))
    try:
        ranks = Ranks(cuda=common.device == 'cuda')
    except ShardError as err:
        raise RunError(str(err))
    return ranks.finish(lambda: run_ranks(cfg, common, ranks, network, family, reward_path, reporter))


def flow_network(resume):
    """(path, family) of the flow checkpoint --resume names ('bundled-flow' or None: the bundled flow model), read once
    (dnnlib.util.frozen_file); RunError when it is missing or not a flow checkpoint."""
    network = os.path.abspath(demo.FLOW_GENERATOR if resume in (None, 'bundled-flow') else resume)
    if not os.path.exists(network):
        raise RunError(f'{resume or network}: no such network file')
    try:
        network = dnnlib.util.frozen_file(network)          # Read once: recognised and loaded from these bytes.
        family = registry.family_of_file(network)
    except dnnlib.util.NotRegularFile as err:
        raise RunError(f'--resume: {err}') from None
    except (OSError, ValueError):
        family = None
    if family is None or 'stages' not in family.capabilities:
        raise RunError(f'--resume: {network} is not a flow checkpoint (tools/train_flow.py writes them)')
    return network, family


def flow_reward_path(cfg):
    """The absolute path of --reward-model, or of the bundled flow reward of --demo-annotator; RunError without one."""
    reward_path = cfg.reward_model or demo.flow_reward(cfg.demo_annotator)
    if reward_path is None:
        raise RunError(f'--demo-annotator={cfg.demo_annotator} has no bundled flow reward (those of '
            f'{", ".join("oracle:" + t for t in demo.FLOW_TASTES)} do); pass --reward-model')
    return os.path.abspath(reward_path)


def check_preference_files(cfg):
    """Before the run folder and any model (a dry run too): --bank opens, --labels loads over its ids and holds a
    decided pair within a condition, and each asset those pairs need is a regular file. RunError of one line naming
    the file otherwise (load_preferences reads the assets once the run has started)."""
    if cfg.is_demo:
        return
    try:
        bank = Bank(cfg.bank)
        chosen, rejected, dropped = bank_pairs(bank, load_judgements(cfg.labels, known_ids=bank.ids))
        if not chosen:
            raise ValueError(f'{cfg.labels}: no decided pair of two samples of one condition of {cfg.bank} '
                f'(dropped: {dropped})')
        for sample_id in sorted(set(chosen) | set(rejected)):
            problem = dnnlib.util.file_problem(bank.path(sample_id, 'asset.npz'))
            if problem is not None:
                raise ValueError(f'{problem}; {REDRAW}')
    except (OSError, ValueError) as err:                # BankError, LabelError: one line naming the file.
        raise RunError(str(err).splitlines()[0]) from None


def run_folder(cfg, common, ranks, options, desc):
    """The run folder: --resume-run's (its options must be these) or a new one outdir/NNNNN-desc that rank 0 picks,
    makes (not for a dry run) and shares; RunError on every rank when rank 0 could not make it."""
    if getattr(cfg, 'resume_run', None):              # (Methods without --resume-run lack the field.)
        run_dir = os.path.abspath(cfg.resume_run)
        try:
            with open(os.path.join(run_dir, 'options.json')) as f:
                before = json.load(f)
        except (OSError, ValueError) as err:
            raise RunError(f'--resume-run: {err}') from None
        now = json.loads(json.dumps(dict(options, run_dir=run_dir)))
        differ = resume_differences(before, now, cfg)
        if differ:
            changes = ', '.join(f'{k}={before.get(k)!r}, now {now.get(k)!r}' for k in differ[:3])
            raise RunError(f'--resume-run: {run_dir} ran with other options ({changes}); resume it with its own')
        return run_dir
    problem = None
    if ranks.main:
        run_dir = runs.next_run_dir(common.outdir or demo.OPTIONS['outdir'], desc)
        if not common.dry_run:
            try:
                runs.create(run_dir, dict(options, run_dir=run_dir))
            except OSError as err:
                problem = f'{run_dir}: {err}'
    run_dir, problem = ranks.broadcast((run_dir, problem) if ranks.main else None)
    if problem:
        raise RunError(problem)
    return run_dir


RESUME_MAY_CHANGE = ('run_dir', 'resume_run', 'snap_steps', 'snap_iterations', 'report_to')   # A resumed run may change these.


def resume_differences(before, now, cfg):
    """Options (sorted names) in which a run folder's options.json (before) and a --resume-run (now) differ, beyond
    those it may change; a setting the folder lacks (one added to the config since it ran) counts as its default."""
    defaults = json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(cfg)
        if f.default is not dataclasses.MISSING}))
    defaults.setdefault('processes', 1)                 # (Folders written before a method ran under torchrun.)
    return [k for k in sorted(set(before) | set(now))
        if k not in RESUME_MAY_CHANGE and before.get(k, defaults.get(k)) != now.get(k)]


def run_ranks(cfg, common, ranks, network, family, reward_path, reporter):
    """run() in each process of the job (one outside torchrun): the run folder, the models, align()."""
    device = common.device if ranks.size == 1 else str(ranks.device(torch.device(common.device)))
    for flag, batch in (('--detail-batch', cfg.dpo_batch), ('--structure-batch', cfg.structure_batch)):
        if batch is not None and batch < ranks.size:
            raise RunError(f'{flag}={batch} pairs a step cannot be shared by {ranks.size} processes')
    try:
        reward = shared_reward(reward_path, device)
    except RewardCheckpointError as err:
        raise RunError(f'--reward-model: {err}')
    try:
        aggregate.aggregated(reward, cfg.reward_aggregate, cfg.aggregate_lambda)
    except ValueError as err:
        raise RunError(f'--reward-aggregate: {err}')
    desc = f'flow-circular-dpo-{cfg.ablation.replace(",", "")}' + ('-demo' if cfg.is_demo else '') + (f'-{common.desc}' if common.desc else '')
    options = dict(method='circular-dpo', network=network, reward_model=reward_path, seed=common.seed,
        device=common.device, processes=ranks.size, run_dir=None, report_to=reporter,
        **{k: v for k, v in dataclasses.asdict(cfg).items() if k != 'reward_model'})
    run_dir = run_folder(cfg, common, ranks, options, desc)
    options['run_dir'] = run_dir
    if ranks.main and (common.get('verbose') or common.dry_run):
        print(json.dumps(options, indent=2))
    elif ranks.main:
        print(f'Options: {os.path.join(run_dir, "options.json")} (--verbose prints them)')
    if common.dry_run:
        if ranks.main:
            print('Dry run; exiting.')
        return None
    try:
        state = RunState(run_dir, cfg.snap_steps, ranks, resume=bool(cfg.resume_run))
    except StateError as err:
        raise RunError(f'--resume-run: {err}')
    logging = runs.log_to(os.path.join(run_dir, 'log.txt')) if ranks.main else contextlib.nullcontext()
    with logging:
        if state.replaying:
            print(f'Resuming {run_dir} at step {state.loaded["step"]["step"]} of phase '
                f'{phase_name(state.loaded["phase"])} ({len(state.done)} groups finished)')
        generator = family.load(network, device)
        ext = '.safetensors' if safetensors_file.is_safetensors(network) else '.pt'   # Snapshots in the base's format.
        save = lambda path, pipeline, info: family.save(os.path.splitext(path)[0] + ext, generator.with_pipeline(pipeline), info)
        try:
            writer = report_to.open_writer(run_dir, reporter, config=options) if ranks.main else report_to.NullWriter()
        except report_to.ReportError as err:
            raise RunError(str(err))
        try:
            summary = align(cfg, generator, reward, run_dir, save, seed=common.seed, reward_path=reward_path,
                writer=writer, ranks=ranks, state=state)
        except (OSError, ValueError) as err:
            raise RunError(str(err).splitlines()[0])
        finally:
            writer.close()
        if summary is None:                             # A torchrun rank other than 0: its share is done.
            return None
        if summary['alarm']:
            print(summary['alarm'])
        for row in summary['groups'].values():
            print(f'({row["group"]}) ' + ', '.join(f'{name} preferred in {c["wins"]} of {c["wins"] + c["losses"]} '
                f'({c["share"]:.0%} of pairs, ties half)' for name, c in row['collateral'].items())
                + f' (every taste, temperature 0); dents in {row["dents_deeper"]} of {row["dents_samples"]} samples')
            if 'win_rate' in row:
                print(f'({row["group"]}) preferred to the base in {row["wins"]} of {row["wins"] + row["losses"]} '
                    f'held-out pairs ({100 * row["win_rate"]:.1f}%, Wilson 95% {100 * row["wilson95"][0]:.1f}-'
                    f'{100 * row["wilson95"][1]:.1f}%, binomial p {row["binomial_p"]:.2g})')
        for group, v in summary['versus_a'].items():
            r = v['trained']
            print(f'(a) against ({group}) on the same held-out ids: {cfg.eval_annotator} prefers (a) in {r["wins"]} of '
                f'{r["wins"] + r["losses"]} decided ({r["ties"]} ties, binomial p {r["binomial_p"]:.2g}, temperature 0)')
        print(f'{summary["timing"]["total_seconds"]:.0f} s; report: {os.path.join(run_dir, "report.html")}')
    return summary

#----------------------------------------------------------------------------
