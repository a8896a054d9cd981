"""The top and bottom of a bank by reward, as pictures and meshes; sigma cubes of other generators scored beside it."""

import os

import click
import numpy as np
from tqdm import tqdm

from eg3d_rlhf.analysis import report_plots, tails
from eg3d_rlhf.cli import FINITE, check_bank_grid, device_option, open_bank, open_reward, pick_device

#----------------------------------------------------------------------------

@click.command()
@click.option('--bank', 'bank_path', required=True, metavar='DIR', help='Bank whose samples are ranked')
@click.option('--reward-model', 'reward_path', required=True, metavar='PT', help='Reward checkpoint that ranks them')
@click.option('--k', type=click.IntRange(min=1), default=4, show_default=True, help='Samples at each end')
@click.option('--cubes', multiple=True, metavar='NPY|MRC', help="Other generators' raw sigma cubes (N^3) to score; repeatable")
@click.option('--flip-x', is_flag=True, help='Flip the cubes\' x axis first (gen_samples.py saves them flipped)')
@click.option('--robust-normalise', is_flag=True,
    help="Map each cube's 1st..99.9th sigma percentiles onto the bank's before scoring")
@click.option('--level', type=FINITE, default=10.0, show_default=True, help='Sigma of the surface in pictures and meshes')
@click.option('--outdir', required=True, metavar='REPORT', help='Report folder (report.html, report.json, PNGs, PLYs)')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Slabs scored per pass')
@click.option('--dry-run', is_flag=True, help='Check the inputs and print the plan; compute nothing')
@device_option
def main(bank_path, reward_path, k, cubes, flip_x, robust_normalise, level, outdir, batch, dry_run, device_name):
    """Score a bank with a reward through its own contract, then show its k best and k worst samples (a strip of
    surface previews and a PLY each), score sigma cubes from other generators on the same slab (cropped from the
    cube, resampled first when its resolution differs from the reward's), and plot the positive sigma of every
    source as a log-log histogram.

    \b
    python tools/tails.py --bank my-bank --reward-model checkpoints/reward-sigma-nose.pt --k 4 --outdir tails \\
        --cubes seed0000.mrc --cubes seed0001.mrc --flip-x --robust-normalise
    """
    bank = open_bank(bank_path)
    device = pick_device(device_name)
    reward = open_reward(reward_path, device)
    check_bank_grid(bank, reward)
    for path in cubes:
        if not os.path.isfile(path):
            raise click.ClickException(f'--cubes: {path} does not exist')
    if dry_run:
        print(f'would rank {len(bank)} samples of {bank_path} with the {reward.kind} reward {reward_path}, show the '
            f'top and bottom {k} and score {len(cubes)} cube(s); report in {outdir}')
        return

    slabs = bank.slabs()
    ids = list(slabs)
    with tqdm(total=len(ids), desc='scoring the bank', unit='sample') as bar:
        scores = reward.score_slabs((slabs[i] for i in ids), batch=batch, progress=bar.update)
    top, bottom = tails.tails(ids, scores, k)
    os.makedirs(outdir, exist_ok=True)
    tails.plot_strip([('top', top), ('bottom', bottom)], slabs, reward.grid, os.path.join(outdir, 'tails.png'), level)
    meshes = tails.write_meshes(top, slabs, reward.grid, outdir, 'top', level) + \
        tails.write_meshes(bottom, slabs, reward.grid, outdir, 'bottom', level)
    reference = np.stack([slabs[i] for i in ids])
    sources, cube_scores = {f'bank ({len(ids)} slabs)': reference}, {}
    for path in tqdm(cubes, desc='scoring cubes', unit='cube'):
        try:
            slab = tails.cube_to_slab(tails.read_cube(path), reward.grid, flip_x=flip_x)
            slab = tails.robust_normalise(slab, reference) if robust_normalise else slab
        except ValueError as err:
            raise click.ClickException(str(err) if path in str(err) else f'{path}: {err}')
        cube_scores[os.path.basename(path)] = float(reward.score_slabs([slab])[0])
        sources[os.path.basename(path)] = slab
    tails.plot_sigma_histograms(sources, os.path.join(outdir, 'sigma_histogram.png'))
    summary = dict(bank=os.path.abspath(bank_path), reward_model=os.path.abspath(reward_path), samples=len(ids),
        score_mean=float(scores.mean()), score_std=float(scores.std()),
        top=[dict(id=i, score=s) for i, s in top], bottom=[dict(id=i, score=s) for i, s in bottom],
        cubes=cube_scores, flip_x=flip_x, robust_normalise=robust_normalise, meshes=meshes)
    rows = [[name, f'{s:+.3f}', f'{(s - scores.mean()) / max(scores.std(), 1e-12):+.2f}'] for name, s in cube_scores.items()]
    tables = [('Cubes of other generators', ['file', 'reward', 'z-score against the bank'], rows)] if rows else []
    report_plots.write_report(outdir, 'Reward tails and transfer', summary, ['tails.png', 'sigma_histogram.png'],
        tables=tables)
    print(f'bank: {len(ids)} samples, reward {scores.mean():+.3f} +- {scores.std():.3f}; top {top[0][0]} '
        f'{top[0][1]:+.3f}, bottom {bottom[0][0]} {bottom[0][1]:+.3f}')
    for name, s in cube_scores.items():
        print(f'{name}: reward {s:+.3f}')
    print(f'report: {os.path.join(outdir, "report.html")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
