"""Train the bundled two-stage flow model on synthetic heads: stats, snapshots with PNG previews, resume."""

import json
import math
import os

import click
from tqdm import tqdm

from dnnlib.util import atomic_write
from eg3d_rlhf.analysis.report_plots import plot_losses
from eg3d_rlhf.cli import SEED, OUT_DIR, FiniteRange, all_or_nothing, device_option, force_option, holds, open_reporter, outermost_new_folder, pick_device, pick_reporter, refuse_outdir, report_option
from eg3d_rlhf.generators import flow_heads
from eg3d_rlhf.geometry.preview import rgb_picture, save_picture, tile
from eg3d_rlhf.synthetic import flow_data

#----------------------------------------------------------------------------

def parse_config(ctx, param, value):
    """--config: a JSON object, or the path of a file holding one."""
    if value is None:
        return {}
    try:
        text = open(value).read() if os.path.isfile(value) else value
        config = json.loads(text)
    except (OSError, json.JSONDecodeError) as err:
        raise click.BadParameter(f'not a JSON object or a JSON file ({err})')
    if not isinstance(config, dict):
        raise click.BadParameter('expected a JSON object of flow config keys')
    return config


def read_stats(path):
    """The records of stats.jsonl (a torn last line, from a killed run, is skipped)."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def rate(lr, schedule, step, steps):
    """The learning rate of step `step` (0-based) of `steps`."""
    return lr if schedule == 'constant' else lr * 0.5 * (1 + math.cos(math.pi * step / steps))


def save_preview(G, conditions, columns, path):
    """A PNG grid: one row per condition (at most 4), seeds 0..columns-1."""
    rows = [rgb_picture(image) for c in range(min(conditions, 4)) for image in G.images(range(columns), c)]
    save_picture(tile(rows, columns), path)


def snapshot(outdir, pipeline, config, optimizer, step, options, preview_columns):
    path = os.path.join(outdir, f'flow-{step:06d}.{options["format"]}')
    training = dict(step=step, seed=options['seed'], batch=options['batch'], lr=options['lr'], schedule=options['schedule'],
        optimizer=optimizer.state_dict())
    flow_heads.save_flow(path, pipeline, config, training)
    if preview_columns:
        G = flow_heads.build_generator(pipeline.frozen_copy(), config, image_res=64)
        save_preview(G, config['conditions'], preview_columns, os.path.join(outdir, f'preview-{step:06d}.png'))
    return path

#----------------------------------------------------------------------------

@click.command()
@click.option('--outdir', type=OUT_DIR, required=True, metavar='DIR', help='Run folder (options.json, stats.jsonl, snapshots): new or empty, unless --resume names a snapshot in it (the run continues there) or --force')
@click.option('--preset', type=click.Choice(sorted(flow_heads.PRESETS)), default='default', show_default=True,
    help='Base config')
@click.option('--config', 'overrides', callback=parse_config, metavar='JSON', help='Config keys over the preset')
@click.option('--steps', type=click.IntRange(min=1), default=2000, show_default=True, help='Total training steps')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Heads per step')
@click.option('--lr', type=FiniteRange(min=0, min_open=True), default=2e-3, show_default=True, help='Adam rate')
@click.option('--schedule', type=click.Choice(['cosine', 'constant']), default='cosine', show_default=True,
    help='Learning rate over the run: cosine = from --lr down to 0 at --steps, constant = --lr throughout')
@click.option('--seed', type=SEED, default=0, show_default=True, help='Seed of batches and noise')
@click.option('--snap', type=click.IntRange(min=1), default=500, show_default=True, help='Steps between snapshots')
@click.option('--preview', 'preview_columns', type=click.IntRange(min=0), default=4, show_default=True,
    help='Seeds per preview row (0: no previews)')
@click.option('--resume', type=click.Path(exists=True, dir_okay=False), help='Snapshot to continue from')
@click.option('--format', 'snapshot_format', type=click.Choice(['pt', 'safetensors']), default='pt', show_default=True,
    help='Snapshot files: torch zip (weights_only) or safetensors')
@click.option('--dry-run', is_flag=True, help='Print the options and config, write nothing')
@force_option
@device_option
@report_option
def main(outdir, preset, overrides, steps, batch, lr, schedule, seed, snap, preview_columns, resume, snapshot_format, dry_run,
        force, device_name, report_to):
    """Train the two stages (structure, detail) by flow matching on synthetic heads' true SDFs."""
    continues = refuse_outdir(outdir, force, resume)           # Another run's snapshots, options and stats stay.
    try:
        if resume is not None:
            state = flow_heads.read_flow(resume)
            config, training = state['config'], state.get('training') or {}
            if overrides and any(config.get(k) != v for k, v in overrides.items()):
                raise click.UsageError('--config differs from the config of the run being resumed')
        else:
            state, training = None, {}
            config = flow_heads.check_config(dict(flow_heads.PRESETS[preset], **overrides))
    except ValueError as err:
        raise click.ClickException(str(err))
    start = int(training.get('step', 0))
    options = dict(outdir=outdir, preset=preset, config=config, steps=steps, batch=batch, lr=lr, schedule=schedule, seed=seed, snap=snap,
        preview=preview_columns, resume=resume, start=start, device=device_name, format=snapshot_format,
        report_to=pick_reporter(report_to))
    if dry_run:
        click.echo(json.dumps(options, indent=2))
        return
    if start >= steps:
        raise click.ClickException(f'the snapshot is at step {start}; ask for more --steps than that')
    device = pick_device(device_name)
    pipeline = flow_heads.build_pipeline(config, init_seed=seed) if state is None else flow_heads.load_pipeline(state, device)
    for m in pipeline.modules():
        m.to(device)
    optimizer = flow_heads.make_optimizer(pipeline, lr)
    if 'optimizer' in training:
        optimizer.load_state_dict(training['optimizer'])
    with all_or_nothing(outdir, outermost_new_folder(os.path.join(outdir, 'x')), keep=lambda: holds(outdir, 'flow-')):
        os.makedirs(outdir, exist_ok=True)
        with atomic_write(os.path.join(outdir, 'options.json'), 'w') as f:
            json.dump(options, f, indent=2)
        sdf, conditions = flow_data.training_heads(config['data_seed'], config['heads'], config['grid'] * config['patch'],
            config['conditions'], config['cube_length'], build_spread=config['build_spread'], progress=True)
        assets = flow_heads.sdf_to_sigma(sdf, flow_heads.truncation_length(config))
        writer = open_reporter(outdir, options['report_to'], config=options)     # A resumed run's log continues in it.
        with open(os.path.join(outdir, 'stats.jsonl'), 'a' if continues else 'w') as stats:
            for step in tqdm(range(start, steps), desc='train flow', unit='step', initial=start, total=steps):
                for group in optimizer.param_groups:
                    group['lr'] = rate(lr, schedule, step, steps)
                losses = flow_heads.train_step(pipeline, optimizer, assets, conditions, step, batch, seed)
                record = {'step': step + 1, **{f'loss/{s.name}': v for s, v in zip(pipeline.stages, losses)}}
                stats.write(json.dumps(record) + '\n')
                stats.flush()
                writer.scalars(step + 1, {k: v for k, v in record.items() if k != 'step'})
                if (step + 1) % snap == 0 or step + 1 == steps:
                    path = snapshot(outdir, pipeline, config, optimizer, step + 1, options, preview_columns)
                    plot_losses(read_stats(os.path.join(outdir, 'stats.jsonl')), os.path.join(outdir, 'losses.png'))
                    for name in ['losses.png'] + ([f'preview-{step + 1:06d}.png'] if preview_columns else []):
                        writer.image(name.split('-')[0].replace('.png', ''), step + 1, os.path.join(outdir, name))
                    tqdm.write(f'snapshot {path}')
        writer.close()

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
