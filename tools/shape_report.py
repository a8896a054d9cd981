"""How often a generator's level-10 mesh is one closed head: connected components over seeds, previews, a fakes grid."""

import click

from eg3d_rlhf.analysis.shapes import shape_report
from eg3d_rlhf.cli import (OUT_DIR, FINITE, NETWORK_HELP, conditions_option, device_option, FiniteRange, load_generator,
    mesh_convention_option, network_keys, network_path, parse_range, pick_device)

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', 'network_pkl', help=NETWORK_HELP, required=True, metavar='PKL|PT|bundled|bundled-flow')
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust PKL: loading a pickle runs code stored in it')
@click.option('--seeds', type=parse_range, help="Seeds, e.g. '0-99'", default='0-99', show_default=True, metavar='LIST')
@conditions_option
@click.option('--res', 'resolution', type=click.IntRange(min=8), default=128, show_default=True, help='Points per cube axis')
@click.option('--trunc', 'truncation_psi', type=FINITE, default=0.7, show_default=True, help='Truncation psi (EG3D)')
@click.option('--level', type=FINITE, default=10, show_default=True, help='Iso level of raw sigma')
@click.option('--threshold', type=FiniteRange(0, 1), default=0.9, show_default=True,
    help='A seed counts as one head when its largest component holds at least this share of the surface area')
@mesh_convention_option
@click.option('--previews', type=click.IntRange(min=0), default=8, show_default=True, help='Seeds (the first ones) to draw')
@click.option('--outdir', type=OUT_DIR, help='Output folder', required=True, metavar='DIR')
@click.option('--dry-run', is_flag=True, help='Print what would be done; load and write nothing')
@device_option
def main(network_pkl, trust_pickle, seeds, conditions, resolution, truncation_psi, level, threshold, mesh_convention, previews, outdir,
        dry_run, device_name):
    """Extract each seed's iso-surface on the full cube (gen_samples' frontal conditioning camera; the border of
    --mesh-convention) and measure its connected components by surface area. Writes report.json (per seed and the
    share of seeds that are one head), previews.png (front / three-quarter / profile, one row per seed) and fakes.png.

    \b
    python tools/shape_report.py --network=checkpoints/synthetic-heads64.pkl --trust-pickle --outdir=out
    python tools/shape_report.py --network=bundled-flow --seeds=0-12 --outdir=out
    """
    network_pkl = network_path(network_pkl, trust_pickle)
    device = pick_device(device_name)
    keys = network_keys(network_pkl, seeds, conditions)
    if dry_run:
        print(f'would load {network_pkl} on {device}, mesh {len(keys)} samples on a {resolution}^3 cube at level {level} '
            f'(psi {truncation_psi}, {mesh_convention} mesh convention) and write report.json, previews.png and fakes.png '
            f'to {outdir}')
        return
    generator = load_generator(network_pkl, device, truncation_psi=truncation_psi)
    report = shape_report(generator, seeds, outdir, resolution=resolution, level=level, threshold=threshold,
        previews=previews, conditions=conditions, convention=mesh_convention)
    print(f'{report["single_head"]}/{len(keys)} samples ({100 * report["single_head_fraction"]:.0f}%) have a largest component '
        f'with >= {100 * threshold:.0f}% of the surface; {100 * report["closed_fraction"]:.0f}% are closed; wrote {outdir}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
