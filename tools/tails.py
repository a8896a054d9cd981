"""The top and bottom of a bank by reward, as pictures and meshes; sigma cubes of other generators scored beside it."""

import os

import click
from tqdm import tqdm

from eg3d_rlhf.analysis import tails
from eg3d_rlhf.cli import (FINITE, OUT_DIR, all_or_nothing, check_bank_grid, device_option, one_line_errors, open_bank,
    open_reward, outermost_new_folder, pick_device)
from eg3d_rlhf.data.bank import BankError
from eg3d_rlhf.rewards.contract import ScoreError
from eg3d_rlhf.synthetic import demo

#----------------------------------------------------------------------------

BUNDLED_REWARD = demo.reward_model('sigma')


def refuse_outdir(outdir, force):
    """A one-line click error when outdir is a folder holding anything and --force is not given (a file there is
    refused already when the command line is read: cli.OUT_DIR)."""
    if os.path.isdir(outdir) and os.listdir(outdir) and not force:
        raise click.ClickException(f'--outdir {outdir} is not empty; pass --force to write into it, or choose another folder')


def load_cube(path):
    """The cube of a --cubes file; a one-line click error naming it when it is missing or not a finite N^3 cube."""
    if not os.path.isfile(path):
        raise click.ClickException(f'--cubes: {path} does not exist')
    with one_line_errors(tails.CubeError):
        return tails.read_cube(path)


def check_cubes(paths):
    """{path: N} of the --cubes files, each read and checked before any long work (and then let go: a cube is read
    again when it is scored, so only one is ever held)."""
    if len(set(paths)) != len(paths):
        raise click.ClickException(f'--cubes: {next(p for p in paths if paths.count(p) > 1)} is given twice')
    sizes = {}
    with tqdm(total=len(paths), desc='checking cubes', unit='cube', disable=not paths) as bar:   # Closed on an error:
        for path in paths:                                                      # its Error line starts a line of its own.
            sizes[path] = load_cube(path).shape[0]
            bar.update()
    return sizes

#----------------------------------------------------------------------------

@click.command()
@click.option('--bank', 'bank_path', required=True, metavar='DIR', help='Bank whose samples are ranked')
@click.option('--reward-model', 'reward_path', default=BUNDLED_REWARD, metavar='PT',
    help=f'Reward checkpoint that ranks them  [default: the bundled {os.path.relpath(BUNDLED_REWARD, demo.ROOT)}]')
@click.option('--k', type=click.IntRange(min=1), default=4, show_default=True, help='Samples at each end')
@click.option('--cubes', multiple=True, metavar='NPY|MRC',
    help="Another generator's raw sigma cube (N^3, .npy or .mrc) to score; repeat the flag for more")
@click.option('--flip-x', is_flag=True, help="Flip the cubes' x axis first (gen_samples.py saves them flipped)")
@click.option('--robust-normalise', is_flag=True,
    help="Map each cube's 1st..99.9th sigma percentiles onto the bank slabs' and clip to their range before scoring")
@click.option('--level', type=FINITE, default=10.0, show_default=True, help='Sigma of the surface in pictures and meshes')
@click.option('--preview-res', type=click.IntRange(min=16), default=128, show_default=True,
    help='Pixels per side of each view in the strip')
@click.option('--outdir', type=OUT_DIR, required=True, metavar='REPORT', help='Report folder (report.html, report.json, PNGs, PLYs)')
@click.option('--force', is_flag=True, help='Write into an --outdir that is not empty (files of the same names are replaced)')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Slabs scored per pass')
@click.option('--dry-run', is_flag=True, help='Check the inputs (cubes included) and print the plan; write nothing')
@device_option
def main(bank_path, reward_path, k, cubes, flip_x, robust_normalise, level, preview_res, outdir, force, batch, dry_run,
        device_name):
    """Score a bank with a reward through its own contract, then show its k best and k worst samples (a strip of
    shaded surface previews, three-quarter and profile, and a PLY each); score sigma cubes of other generators on
    the same slab (cropped from the cube, resampled trilinearly first when its resolution differs from the reward's);
    and plot the positive sigma of every source as a log-log histogram. Writes report.html, report.json, scores.csv
    (every sample of the bank), tails.png, sigma_histogram.png and top*/bottom* PLYs.

    \b
    python tools/tails.py --bank my-bank --k 4 --outdir tails \\
        --cubes seed0000.mrc --cubes seed0001.mrc --flip-x --robust-normalise
    """
    bank = open_bank(bank_path)
    refuse_outdir(outdir, force)
    device = pick_device(device_name)
    reward = open_reward(reward_path, device)
    check_bank_grid(bank, reward, reward_path)
    cubes = check_cubes(list(cubes))
    if dry_run:
        print(f'would rank {len(bank)} samples of {bank_path} with the {reward.kind} reward {reward_path}, show the '
            f'top and bottom {min(k, len(bank))} and score {len(cubes)} cube(s) '
            f'({", ".join(f"{p} {n}^3" for p, n in cubes.items()) or "none"}); report in {outdir}')
        return
    with all_or_nothing(outdir, outermost_new_folder(os.path.join(outdir, 'x'))), \
            one_line_errors(BankError, tails.CubeError, ScoreError):
        os.makedirs(outdir, exist_ok=True)
        summary = tails.report(reward, bank, outdir, reward_path, bank_path, k=k, cubes=cubes, flip_x=flip_x,
            robust_normalise=robust_normalise, level=level, preview_res=preview_res, batch=batch)
    top, bottom = summary['top'][0], summary['bottom'][0]
    print(f'bank: {len(bank)} samples, reward {summary["score_mean"]:+.3f} +- {summary["score_std"]:.3f}; top {top["id"]} '
        f'{top["score"]:+.3f}, bottom {bottom["id"]} {bottom["score"]:+.3f}')
    for name, c in summary['cubes'].items():
        print(f'{name}: reward {c["score"]:+.3f} (z {c["z_score"]:+.2f})')
    print(f'report: {os.path.join(outdir, "report.html")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
