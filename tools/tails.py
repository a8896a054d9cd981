"""The top and bottom of a bank by reward, as pictures and meshes; sigma cubes of other generators scored beside it."""

import os

import click
from tqdm import tqdm

from eg3d_rlhf.analysis import report_plots, tails
from eg3d_rlhf.cli import FINITE, OUT_DIR, check_bank_grid, device_option, one_line_errors, open_bank, open_reward, pick_device
from eg3d_rlhf.data.bank import BankError
from eg3d_rlhf.data.scores import write_scores
from eg3d_rlhf.synthetic import demo

#----------------------------------------------------------------------------

BUNDLED_REWARD = demo.reward_model('sigma')


def refuse_outdir(outdir, force):
    """A one-line click error when outdir is a folder holding anything and --force is not given (a file there is
    refused already when the command line is read: cli.OUT_DIR)."""
    if os.path.isdir(outdir) and os.listdir(outdir) and not force:
        raise click.ClickException(f'--outdir {outdir} is not empty; pass --force to write into it, or choose another folder')


def cube_names(paths):
    """A report name per cube file: its base name, or the path as given where base names repeat."""
    bases = [os.path.basename(p) for p in paths]
    return [b if bases.count(b) == 1 else p for b, p in zip(bases, paths)]


def load_cube(path):
    """The cube of a --cubes file; a one-line click error naming it when it is missing or not a finite N^3 cube."""
    if not os.path.isfile(path):
        raise click.ClickException(f'--cubes: {path} does not exist')
    try:
        return tails.read_cube(path)
    except ValueError as err:
        raise click.ClickException(str(err))


def check_cubes(paths):
    """{path: N} of the --cubes files, each read and checked before any long work (and then let go: a cube is read
    again when it is scored, so only one is ever held)."""
    if len(set(paths)) != len(paths):
        raise click.ClickException(f'--cubes: {next(p for p in paths if paths.count(p) > 1)} is given twice')
    return {path: load_cube(path).shape[0] for path in tqdm(paths, desc='checking cubes', unit='cube', disable=not paths)}


def score_cube(reward, path, cube, flip_x, reference):
    """(score, SigmaStats of the slab as read, SigmaStats after normalising or None) of one cube; click errors."""
    try:
        slab = tails.cube_to_slab(cube, reward.grid, flip_x=flip_x)
        as_read = tails.SigmaStats()
        as_read.add(slab)
        normalised = None
        if reference is not None:
            slab = tails.cube_to_slab(cube, reward.grid, flip_x=flip_x, reference=reference)
            normalised = tails.SigmaStats()
            normalised.add(slab)
    except ValueError as err:
        raise click.ClickException(f'{path}: {err}')
    return float(reward.score_slabs([slab])[0]), as_read, normalised

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
    check_bank_grid(bank, reward)
    cubes = check_cubes(list(cubes))
    if dry_run:
        print(f'would rank {len(bank)} samples of {bank_path} with the {reward.kind} reward {reward_path}, show the '
            f'top and bottom {min(k, len(bank))} and score {len(cubes)} cube(s) '
            f'({", ".join(f"{p} {n}^3" for p, n in cubes.items()) or "none"}); report in {outdir}')
        return
    os.makedirs(outdir, exist_ok=True)

    bank_stats = tails.SigmaStats()
    with one_line_errors(BankError), tqdm(total=len(bank), desc='scoring the bank', unit='sample') as bar:
        scores = tails.score_bank(reward, bank, stats=bank_stats, batch=batch, progress=bar.update)
    write_scores(os.path.join(outdir, 'scores.csv'), dict(zip(bank.ids, scores.tolist())))
    top, bottom = tails.rank(bank.ids, scores, k)
    shown = bank.slabs(sorted({i for i, _ in top + bottom}))    # Read once already: they are finite.
    with tqdm(total=2, desc='strip and meshes', unit='step') as bar:
        tails.plot_strip([(f'top {len(top)}', top), (f'bottom {len(bottom)}', bottom)], shown, reward.grid,
            os.path.join(outdir, 'tails.png'), level, preview_res,
            title=f'{os.path.basename(reward_path)} on {len(bank)} samples of {os.path.basename(os.path.abspath(bank_path))}'
                f' (three-quarter | profile, sigma >= {level:g})')
        bar.update()
        meshes = tails.write_meshes(top, shown, reward.grid, outdir, 'top', level) + \
            tails.write_meshes(bottom, shown, reward.grid, outdir, 'bottom', level)
        bar.update()

    reference = bank_stats.range() if robust_normalise else None
    curves, cube_report = [(f'bank ({len(bank)} slabs)', bank_stats, None)], {}
    mean, std = float(scores.mean()), float(scores.std())
    for path, name in zip(tqdm(cubes, desc='scoring cubes', unit='cube', disable=not cubes), cube_names(list(cubes))):
        score, as_read, normalised = score_cube(reward, path, load_cube(path), flip_x, reference)
        curves.append((name, as_read, normalised))
        cube_report[name] = dict(path=os.path.abspath(path), resolution=cubes[path],
            resampled=cubes[path] != reward.grid.resolution, score=score, z_score=(score - mean) / max(std, 1e-12),
            as_read=as_read.summary(), normalised=normalised.summary() if normalised else None)
    tails.plot_sigma_histograms(curves, os.path.join(outdir, 'sigma_histogram.png'))

    entries = lambda items, names: [dict(id=i, score=s, mesh=m) for (i, s), m in zip(items, names)]
    summary = dict(bank=os.path.abspath(bank_path), reward_model=os.path.abspath(reward_path), reward_kind=reward.kind,
        samples=len(bank), k=len(top), level=level, flip_x=flip_x, robust_normalise=robust_normalise,
        score_mean=mean, score_std=std, top=entries(top, meshes[:len(top)]),
        bottom=entries(bottom, meshes[len(top):]), cubes=cube_report, bank_sigma=bank_stats.summary(),
        normalisation_target=reference)
    tables = [('Top and bottom of the bank', ['end', 'rank', 'id', 'reward', 'mesh'],
        [[end, r, i, f'{s:+.3f}', m or f'no surface at {level:g}'] for end, items, names in
            (('top', top, meshes[:len(top)]), ('bottom', bottom, meshes[len(top):]))
            for r, ((i, s), m) in enumerate(zip(items, names), start=1)])]
    if cube_report:
        tables.append(('Cubes of other generators', ['cube', 'N', 'reward', 'z-score against the bank'],
            [[name, c['resolution'], f'{c["score"]:+.3f}', f'{c["z_score"]:+.2f}'] for name, c in cube_report.items()]))
    report_plots.write_report(outdir, 'Reward tails and transfer', summary, ['tails.png', 'sigma_histogram.png'],
        tables=tables)

    print(f'bank: {len(bank)} samples, reward {mean:+.3f} +- {std:.3f}; top {top[0][0]} {top[0][1]:+.3f}, '
        f'bottom {bottom[0][0]} {bottom[0][1]:+.3f}')
    for name, c in cube_report.items():
        print(f'{name}: reward {c["score"]:+.3f} (z {c["z_score"]:+.2f})')
    print(f'report: {os.path.join(outdir, "report.html")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
