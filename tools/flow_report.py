"""Report on a flow generator's samples: whole heads, stage agreement, diversity against the training data, conditions."""

import click

from eg3d_rlhf.analysis.flow_quality import flow_report
from eg3d_rlhf.cli import (OUT_DIR, conditions_option, device_option, FiniteRange, load_generator, network_keys,
    network_path, parse_range, pick_device)
from eg3d_rlhf.generators import flow_heads
from eg3d_rlhf.synthetic import flow_data

LUMPINESS_RES = 64      # Samples and training heads are judged for lumps on this cube (1/63 world units a voxel).

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', metavar='PT|bundled-flow', default='bundled-flow', show_default=True,
    help='Flow checkpoint (read as data)')
@click.option('--seeds', type=parse_range, default='0-12', show_default=True, metavar='LIST', help='Seeds')
@conditions_option
@click.option('--res', 'resolution', type=click.IntRange(min=8), default=128, show_default=True,
    help='Cube resolution of the meshes whose components are counted')
@click.option('--slab-res', type=click.IntRange(min=16), default=128, show_default=True,
    help='Cube resolution whose face slab the diversity figure compares')
@click.option('--threshold', type=FiniteRange(0, 1), default=0.9, show_default=True,
    help='A sample is one head when its largest component holds at least this share of the surface area')
@click.option('--data-heads', type=click.IntRange(min=0), default=100, show_default=True,
    help="Training heads (the checkpoint config's first ones) the diversity figure is set against; 0: none")
@click.option('--columns', type=click.IntRange(min=1), default=6, show_default=True, help='Seeds per row of conditions.png')
@click.option('--outdir', type=OUT_DIR, required=True, metavar='DIR', help='Report folder (report.html/.json, samples.jsonl, PNGs)')
@click.option('--dry-run', is_flag=True, help='Print what would be done; draw and write nothing')
@device_option
def main(network, seeds, conditions, resolution, slab_res, threshold, data_heads, columns, outdir, dry_run, device_name):
    """Draw each seed under each condition once and report: how many samples are one head (largest level-10
    component's share of the surface), the IoU of the structure stage's plan with the finished asset's structure,
    the mean pairwise RMS distance of face slabs (all, within and across conditions) and the surface lumpiness (mean
    |sdf - gaussian(sdf)| within a voxel of the surface, in voxels), each beside the training data's.

    \b
    python tools/flow_report.py --network bundled-flow --seeds 0-12 --outdir out/flow-report
    """
    path = network_path(network, trust_pickle=False, capability='stages')
    keys = network_keys(path, seeds, conditions)
    device = pick_device(device_name)
    if dry_run:
        print(f'would draw {len(keys)} samples of {path} on {device}, mesh them on a {resolution}^3 cube, compare '
            f'slabs of the {slab_res}^3 cube with {data_heads} training heads and write the report to {outdir}')
        return
    generator = load_generator(path, device)
    data, data_sdf, config = None, None, getattr(generator, 'config', None)  # The flow family's checkpoint config.
    if data_heads and config is not None:
        n, r = min(data_heads, config['heads']), config['grid'] * config['patch']
        heads = lambda res: flow_data.training_heads(config['data_seed'], n, res, config['conditions'],
            config['cube_length'], build_spread=config['build_spread'], progress=True)[0]
        data = flow_heads.sdf_to_sigma(heads(r), flow_heads.truncation_length(config))
        data_sdf = heads(LUMPINESS_RES)                                 # True distances, at the scale judged.
    to_sdf = None if config is None else lambda s: flow_heads.sigma_to_sdf(s, flow_heads.truncation_length(config))
    summary = flow_report(generator, seeds, outdir, conditions=conditions, resolution=resolution, threshold=threshold,
        slab_resolution=slab_res, data_volumes=data, columns=columns, to_sdf=to_sdf, data_sdf=data_sdf)
    d = summary['diversity']
    print(f'{summary["one_head"]}/{summary["samples"]} samples are one head (largest component >= '
        f'{100 * threshold:.0f}% of the surface); structure IoU mean {summary["structure_iou"]["mean"]:.3f}; slab '
        f'distance {d["generated"]["all"]:.3f} (within a condition {d["generated"]["within_condition"]:.3f}, across '
        f'{d["generated"]["across_conditions"]:.3f})' + (f', training data {d["training_data"]["all"]:.3f}' if data is not None else ''))
    if 'lumpiness' in summary:
        lump = summary['lumpiness']
        print(f'surface lumpiness (mean |sdf - gaussian(sdf)| near the surface, voxels): {lump["generated"]:.3f}'
            + (f', training heads {lump["training_data"]:.3f} ({lump["ratio"]:.2f}x)' if 'ratio' in lump else ''))
    print(f'report: {outdir}/report.html')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
