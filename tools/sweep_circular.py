"""Sweep one Circular-DPO setting (beta, dpo_lr, ...): the groups once per value, each a run, and one table of all."""

import dataclasses
import os

import click

import dnnlib
from eg3d_rlhf.analysis import replication
from eg3d_rlhf.data.annotators import parse_annotator
from eg3d_rlhf.finetune import circular_run, run_dir as runs
from eg3d_rlhf.finetune.circular_config import CircularDPOConfig, variant_letters
from eg3d_rlhf.finetune.options import OPTIONAL, ConfigError, RunError, flag_name, flags_of
from eg3d_rlhf.generators.base import seed_ranges

#----------------------------------------------------------------------------

FIELDS = {f.name: f for f in CircularDPOConfig.flags() if f.name != 'ablation'}
SPELLINGS = {flag[2:].replace('-', '_'): f.name for f in FIELDS.values() for flag in flags_of(f)}   # detail_lr: dpo_lr


def parse_setting(text, many):
    """(field name, [values] or value) of 'NAME=V1,V2' (many) or 'NAME=V', each value of the field's type."""
    name, sep, values = text.partition('=')
    name = SPELLINGS.get(name.strip().lstrip('-').replace('-', '_'), name.strip())
    if not sep or name not in FIELDS:
        raise click.BadParameter(f'{text!r}: expected NAME=VALUE{",VALUE..." if many else ""} with NAME one of '
            f'{", ".join(FIELDS)}')
    kind = OPTIONAL.get(FIELDS[name].type, FIELDS[name].type)
    if kind is bool:                                    # bool('false') is True: click reads the words.
        kind = lambda v: click.BOOL.convert(v, None, None)
        kind.__name__ = 'true/false'
    try:
        parsed = [kind(v.strip()) for v in (values.split(',') if many else [values])]
    except (ValueError, click.BadParameter):
        raise click.BadParameter(f'{text!r}: {flags_of(FIELDS[name])[0]} takes {kind.__name__} values') from None
    return name, parsed if many else parsed[0]

#----------------------------------------------------------------------------

@click.command()
@click.option('--sweep', 'sweep', metavar='NAME=V1,V2,...',
    help='The setting to sweep and its values: a train.py --generator=flow flag\'s name (beta=0.5,1,2; dpo_lr=1e-4,2e-4)  [default: none, the settings as given]')
@click.option('--set', 'fixed', multiple=True, metavar='NAME=VALUE', help='Another setting, the same in every run (repeatable)')
@click.option('--variant', '--ablation', 'ablation', metavar='NAME|LIST|all', default='circular', show_default=True,
    help='Variants of every run, as train.py takes them: one, a comma list (circular,final-only; or letters a,d) or all, from the same data and seeds')
@click.option('--resume', metavar='PT', default='bundled-flow', show_default=True, help='Flow checkpoint to align')
@click.option('--outdir', metavar='DIR', default='training-runs', show_default=True,
    help='Parent of the sweep folder (NNNNN-circular-dpo-sweep-NAME: the runs, sweep.md, sweep.json)')
@click.option('--resume-sweep', type=click.Path(exists=True, file_okay=False), metavar='DIR', help='Go on with the sweep '
    'folder DIR: runs it finished are read back, unfinished ones resumed from their state (--set snap_steps=N), the rest run')
@click.option('--no-placebo', is_flag=True, help='Leave the placebo group (k) out of an ablation with (a) and another '
    'group (it joins every such ablation otherwise)')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Seed of every run')
@click.option('--train-seeds', '--seeds', 'seeds', metavar='LIST', help='Run every value once per training seed (0-3, '
    '0,5): other demo judgements and training noise, the same held-out ids; the table then counts the seeds whose run '
    'clears the bar and, with (a) and another group, tests (a) against each across the seeds  [default: --seed]')
@click.option('--eval-seeds', metavar='LIST', help='Held-out seeds every run is judged on, under every condition '
    '(train.py\'s --eval-seeds)  [default: its default]')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
@click.option('--dry-run', is_flag=True, help='Check every run\'s options and print the plan; train nothing')
def main(sweep, fixed, ablation, resume_sweep, no_placebo, resume, outdir, seed, seeds, eval_seeds, device, dry_run):
    """Run Circular-DPO (as `train.py --generator=flow --method=circular-dpo` does, the demo unless --set gives
    labels and bank) once per value of one setting and seed, each in its own run folder under one sweep folder, and
    write one table of every run's groups (held-out win rate, collateral, structure IoU, diversity, and whether the
    result is clean: the trained taste prefers the tuned model in >= 75% of the held-out pairs, every other taste in
    >= 45%, dents in <= 5% of the samples) as sweep.md and sweep.json. With --train-seeds, a second table counts per
    value and group the seeds whose run is clean, and where (a) ran with other groups (the placebo (k) joins them
    unless --no-placebo) a replication table tests (a) against each over the training seeds (Wilcoxon signed-rank,
    Holm-adjusted; eg3d_rlhf/analysis/replication.py): replication.md, replication.json and a forest plot per contrast.

    \b
    python tools/sweep_circular.py --sweep detail_beta=500,1000,2000 --train-seeds 0-3
    python tools/sweep_circular.py --sweep detail_lr=1e-4,2e-4,4e-4 --set dpo_steps=40 --variant all
    python tools/sweep_circular.py --train-seeds 100-107 --eval-seeds 5000-5031 --variant circular,independent,first-only,final-only,front-to-back
    python tools/sweep_circular.py --train-seeds 100-107 ... --resume-sweep training-runs/00003-circular-dpo-sweep-seeds
    """
    try:
        name, values = parse_setting(sweep, many=True) if sweep else (None, [None])
        settings = dict(parse_setting(s, many=False) for s in fixed)
    except click.BadParameter as err:
        raise click.UsageError(err.message)
    if name in settings:
        raise click.UsageError(f'--set {name} and --sweep {name}: sweep it or fix it, not both')
    if eval_seeds is not None:
        if 'eval_seeds' in settings or name == 'eval_seeds':
            raise click.UsageError('--eval-seeds and --set/--sweep eval_seeds: give the held-out seeds once')
        settings['eval_seeds'] = eval_seeds
    try:
        run_seeds = [seed] if seeds is None else seed_ranges(seeds)
    except ValueError as err:
        raise click.UsageError(f'--train-seeds={seeds}: {err}')
    if not run_seeds or len(set(run_seeds)) != len(run_seeds):
        raise click.UsageError(f'--train-seeds={seeds}: give each seed once')
    try:
        given = variant_letters(ablation)
        ablation = circular_run.with_placebo(given, no_placebo)
        configs = [CircularDPOConfig(**settings, ablation=ablation, **({name: v} if name else {})) for v in values]
        device = runs.pick_device(device)
    except (ConfigError, RunError) as err:
        raise click.UsageError(str(err))
    if ablation != given:
        print('The placebo group (k) joins the ablation (--no-placebo leaves it out)')
    try:
        held_out = sorted({s for cfg in configs for s in cfg.seeds('eval_seeds')})
    except ValueError as err:
        raise click.UsageError(f'--eval-seeds={configs[0].eval_seeds}: {err}')
    trained = configs[0].eval_annotator and parse_annotator(configs[0].eval_annotator)
    label = name.replace('_', '-') if name else 'seeds'
    sweep_dir = resume_sweep or runs.next_run_dir(outdir, f'circular-dpo-sweep-{label}')
    plan = f'{flag_name(name)} over {", ".join(map(str, values))}' if name else 'the settings as given'
    print(f'Sweep of {plan}, seed{"s" if len(run_seeds) > 1 else ""} {", ".join(map(str, run_seeds))} (groups '
        f'{ablation}) in {sweep_dir}')
    warning = replication.dev_overlap('flow', run_seeds, held_out)
    if warning:
        click.echo(warning, err=True)
    contrasts = [f'(a) vs ({g})' for g in configs[0].groups if g != 'a'] if 'a' in configs[0].groups else []
    if len(run_seeds) > 1 and contrasts and trained:
        print(f'Across the {len(run_seeds)} training seeds: {", ".join(contrasts)}' + (f' at each {flag_name(name)}'
            if name else '') + f', judged by {trained} on held-out seeds {replication.spans(held_out)} under every '
            'condition (the noise seed the cluster)')
    rows, versus = [], []
    for value, cfg in zip(values, configs):
        for s in run_seeds:
            desc = '-'.join(([f'{label}-{value}'] if name else []) + [f'seed-{s}'] * (seeds is not None))
            common = dnnlib.EasyDict(resume=resume, outdir=sweep_dir, seed=s, device=device, dry_run=dry_run,
                desc=desc or None, report_to='none')
            try:
                summary = circular_run.sweep_member(cfg, common, resuming=resume_sweep is not None)
            except RunError as err:
                raise click.ClickException(str(err))
            if summary is not None:
                rows += [dict(row, **({name: value} if name else {}), seed=s) for row in summary['groups'].values()]
                versus.append((value, s, summary.get('versus_a', {})))
    if dry_run or not rows:
        return
    text, robust, table = circular_run.sweep_report(rows, versus, name, seeds is not None, trained, sweep_dir, warning)
    circular_run.write_sweep(sweep_dir, text, dict(sweep=name, values=values, seeds=run_seeds, eval_seeds=held_out,
        trained=trained, options=dataclasses.asdict(configs[0]), rows=rows, robustness=robust, replication=table,
        dev_seeds_warning=warning))
    print(text + f'Table: {os.path.join(sweep_dir, "sweep.md")}')


#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
