"""Sweep one Circular-DPO setting (beta, dpo_lr, ...): the groups once per value, each a run, and one table of all."""

import dataclasses
import json
import os

import click

import dnnlib
from eg3d_rlhf.finetune import circular_run, run_dir as runs
from eg3d_rlhf.finetune.circular_config import GROUPS, CircularDPOConfig
from eg3d_rlhf.finetune.options import OPTIONAL, ConfigError, RunError, flag_name

#----------------------------------------------------------------------------

FIELDS = {f.name: f for f in CircularDPOConfig.flags() if f.name != 'ablation'}


def parse_setting(text, many):
    """(field name, [values] or value) of 'NAME=V1,V2' (many) or 'NAME=V', each value of the field's type."""
    name, sep, values = text.partition('=')
    name = name.strip().lstrip('-').replace('-', '_')
    if not sep or name not in FIELDS:
        raise click.BadParameter(f'{text!r}: expected NAME=VALUE{",VALUE..." if many else ""} with NAME one of '
            f'{", ".join(FIELDS)}')
    kind = OPTIONAL.get(FIELDS[name].type, FIELDS[name].type)
    try:
        parsed = [kind(v.strip()) for v in (values.split(',') if many else [values])]
    except ValueError:
        raise click.BadParameter(f'{text!r}: {flag_name(name)} takes {kind.__name__} values') from None
    return name, parsed if many else parsed[0]


def markdown(header, body):
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    return '\n'.join(lines + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in body]) + '\n'

#----------------------------------------------------------------------------

@click.command()
@click.option('--sweep', 'sweep', required=True, metavar='NAME=V1,V2,...',
    help='The setting to sweep and its values: a train.py --generator=flow flag\'s name (beta=0.5,1,2; dpo_lr=1e-4,2e-4)')
@click.option('--set', 'fixed', multiple=True, metavar='NAME=VALUE', help='Another setting, the same in every run (repeatable)')
@click.option('--ablation', type=click.Choice([*GROUPS, 'all']), default='a', show_default=True,
    help='Groups of every run (all = every group, the same data and seeds)')
@click.option('--resume', metavar='PT', default='bundled-flow', show_default=True, help='Flow checkpoint to align')
@click.option('--outdir', metavar='DIR', default='training-runs', show_default=True,
    help='Parent of the sweep folder (NNNNN-circular-dpo-sweep-NAME: the runs, sweep.md, sweep.json)')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Seed of every run')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
@click.option('--dry-run', is_flag=True, help='Check every run\'s options and print the plan; train nothing')
def main(sweep, fixed, ablation, resume, outdir, seed, device, dry_run):
    """Run Circular-DPO (as `train.py --generator=flow --method=circular-dpo` does, the demo unless --set gives
    labels and bank) once per value of one setting, each in its own run folder under one sweep folder, and write
    one table of every run's groups (held-out win rate, collateral, structure IoU, diversity) as sweep.md and
    sweep.json.

    \b
    python tools/sweep_circular.py --sweep beta=500,1000,2000
    python tools/sweep_circular.py --sweep dpo_lr=1e-4,2e-4,4e-4 --set dpo_steps=40 --ablation all
    """
    try:
        name, values = parse_setting(sweep, many=True)
        settings = dict(parse_setting(s, many=False) for s in fixed)
    except click.BadParameter as err:
        raise click.UsageError(err.message)
    if name in settings:
        raise click.UsageError(f'--set {name} and --sweep {name}: sweep it or fix it, not both')
    try:
        configs = [CircularDPOConfig(**settings, ablation=ablation, **{name: v}) for v in values]
        device = runs.pick_device(device)
    except (ConfigError, RunError) as err:
        raise click.UsageError(str(err))
    sweep_dir = runs.next_run_dir(outdir, f'circular-dpo-sweep-{name.replace("_", "-")}')
    print(f'Sweep of {flag_name(name)} over {", ".join(map(str, values))} (groups {ablation}) in {sweep_dir}')
    rows = []
    for value, cfg in zip(values, configs):
        common = dnnlib.EasyDict(resume=resume, outdir=sweep_dir, seed=seed, device=device, dry_run=dry_run,
            desc=f'{name.replace("_", "-")}-{value}', report_to='none')
        try:
            summary = circular_run.run(cfg, common)
        except RunError as err:
            raise click.ClickException(str(err))
        if summary is not None:
            rows += [dict(row, **{name: value}) for row in summary['groups'].values()]
    if dry_run or not rows:
        return
    header, body = circular_run.table_rows(rows)
    header, body = [flag_name(name), *header], [[row[name], *cells] for row, cells in zip(rows, body)]
    with dnnlib.util.atomic_write(os.path.join(sweep_dir, 'sweep.md'), 'w', encoding='utf-8') as f:
        f.write(markdown(header, body))
    with dnnlib.util.atomic_write(os.path.join(sweep_dir, 'sweep.json'), 'w', encoding='utf-8') as f:
        json.dump(dict(sweep=name, values=values, options=dataclasses.asdict(configs[0]), rows=rows), f, indent=2,
            default=str)
    print(markdown(header, body) + f'Table: {os.path.join(sweep_dir, "sweep.md")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
