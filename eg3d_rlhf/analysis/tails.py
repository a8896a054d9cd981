"""Tails and transfer: a bank's best and worst samples by reward, and other generators' sigma cubes scored on its slab."""

import os

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import dnnlib
from eg3d_rlhf.analysis import report_plots
from eg3d_rlhf.data.scores import write_scores
from eg3d_rlhf.geometry import mesh, mrc, preview

#----------------------------------------------------------------------------
# The tails of a bank: rank by score, picture and mesh the ends.

STRIP_VIEWS = ('three_quarter', 'profile')     # Each sample of the strip, side by side (the profile shows the nose).


def score_bank(reward, bank, stats=None, batch=8, progress=None):
    """numpy rewards [len(bank)] of the bank's raw slabs in id order, through the reward's own contract
    (Reward.score_slabs), read one batch at a time; each slab is also added to `stats` (a SigmaStats) if given. A score
    that is not finite stops it (rewards.contract.ScoreError naming the sample): it has no place in a ranking."""
    slabs = (bank.slab(i) for i in bank.ids)
    if stats is not None:
        slabs = map(stats.add, slabs)
    return reward.score_slabs(slabs, batch=batch, progress=progress, names=bank.ids)


def rank(ids, scores, k):
    """(top, bottom): [(id, score)] of the k highest scores (highest first) and of the k lowest (lowest first); equal
    scores keep the ids' order."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind='stable')
    low_first = np.argsort(scores, kind='stable')
    k = min(int(k), len(order))
    pick = lambda index: [(ids[i], float(scores[i])) for i in index[:k]]
    return pick(order), pick(low_first)


def sample_picture(slab, grid, level=10.0, resolution=128):
    """uint8 grey picture of a raw slab's surface {sigma >= level}: STRIP_VIEWS side by side."""
    views = preview.render_views(slab, grid, level, STRIP_VIEWS, resolution)
    return preview.tile([views[name] for name in STRIP_VIEWS], len(STRIP_VIEWS))


def plot_strip(rows, slabs, grid, path, level=10.0, resolution=128, title=''):
    """PNG of shaded surface previews: one row per (row label, [(id, score)]), each sample titled with its id and
    score; slabs maps id -> raw slab on `grid`; progress is left to the caller (a row of k takes 2k renders)."""
    plt = report_plots._pyplot()
    columns = max(len(items) for _, items in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(3.2 * columns, 1.95 * len(rows) + 0.4), squeeze=False)
    for r, (label, items) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(items):
                sample_id, score = items[c]
                ax.imshow(sample_picture(slabs[sample_id], grid, level, resolution), cmap='gray', vmin=0, vmax=255)
                ax.set_title(f'{sample_id}  reward {score:+.3f}', fontsize=8)
        axes[r][0].text(-0.04, 0.5, label, transform=axes[r][0].transAxes, rotation=90, va='center', ha='right')
    if title:
        fig.suptitle(title, fontsize=9)
    report_plots._save(fig, path)


def write_meshes(items, slabs, grid, outdir, prefix, level=10.0):
    """A PLY of each (id, score)'s surface {sigma = level}, named PREFIX<rank>-<id>.ply; returns the names in the
    order of items, None where the slab has no surface at that level."""
    names = []
    for rank_, (sample_id, _) in enumerate(items, start=1):
        verts, faces = mesh.extract_mesh(slabs[sample_id], grid, level)
        name = f'{prefix}{rank_}-{sample_id}.ply' if len(faces) else None
        if name is not None:
            mesh.write_ply(os.path.join(outdir, name), verts, faces)
        names.append(name)
    return names

#----------------------------------------------------------------------------
# Sigma cubes of other generators: an N^3 raw-sigma array in (x, y, z) order over the same box as the reward's grid
# (cube_length), as EG3D's gen_samples.py writes it: .npy, or .mrc (it stores its numpy array as is, so the array is
# read as stored and the MRC header's axis mapping is not applied). gen_samples flips x before saving, hence flip_x,
# and overwrites int(30 * N / 256) voxels on every face with PAD_VALUE so that its meshes close.

CUBE_FORMATS = ('.npy', '.mrc')
PAD_VALUE = -1000.0


class CubeError(ValueError):
    """A sigma cube that cannot be read or scored; the message names its file."""


def _one_line(err):
    return ' '.join(str(err).split())


def read_cube(path):
    """float32 cube [N, N, N] of a .npy or .mrc file; CubeError naming the file when it cannot be one."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in CUBE_FORMATS:
        raise CubeError(f'{path}: unknown cube format {ext or "(no extension)"}; expected {" or ".join(CUBE_FORMATS)}')
    try:
        cube = mrc.read_mrc(path, CubeError) if ext == '.mrc' else dnnlib.util.read_npy(path, CubeError)
        cube = np.asarray(cube, dtype=np.float32)           # (Header and size checked first: nothing huge allocated.)
    except (OSError, ValueError, TypeError) as err:
        if isinstance(err, CubeError):
            raise
        raise CubeError(f'{path}: cannot be read as a sigma cube ({_one_line(err)})') from None
    if cube.ndim != 3:
        raise CubeError(f'{path}: expected a 3-D cube [N, N, N], got {cube.ndim}-D {list(cube.shape)}')
    if len(set(cube.shape)) != 1 or cube.shape[0] < 2:
        raise CubeError(f'{path}: expected a cube [N, N, N] with N >= 2, got {list(cube.shape)}')
    bad = int(np.count_nonzero(~np.isfinite(cube)))
    if bad:
        raise CubeError(f'{path}: {bad} values are nan or inf; a sigma cube must be finite')
    return cube


def slab_box(grid, n):
    """Index slices of an N^3 cube (over the same box) covering the slab of `grid`, widened to whole voxels."""
    scale = (n - 1) / (grid.resolution - 1)
    return tuple(slice(int(np.floor(a * scale + 1e-9)), int(np.ceil((b - 1) * scale - 1e-9)) + 1)
        for a, b in zip(grid.start, grid.stop))


def resample(cube, n):
    """An N'^3 cube trilinearly resampled to n^3 (torch, align_corners=True: both grids put their first and last
    points on the box's faces, as CubeGrid does); returned as is when it already is n^3."""
    if cube.shape[0] == n:
        return cube
    x = torch.from_numpy(np.ascontiguousarray(cube, dtype=np.float32))[None, None]
    return F.interpolate(x, size=(n, n, n), mode='trilinear', align_corners=True)[0, 0].numpy()


def cube_to_slab(cube, grid, flip_x=False, reference=None):
    """The raw slab [*grid.shape] of `grid` out of an N^3 cube (a crop; when N is not grid.resolution the cube is
    first resampled to it trilinearly, see resample()). flip_x undoes gen_samples' flip. reference: a
    volume_range() of our own slabs to robust-normalise onto (normalise()), done at the cube's own resolution before
    resampling, so that gen_samples' padding is left out exactly and never blurred into the values."""
    cube = np.flip(cube, 0) if flip_x else cube
    if reference is not None:
        cube = normalise(cube, volume_range(cube[slab_box(grid, cube.shape[0])]), reference)
    cube = resample(cube, grid.resolution)
    (x0, y0, z0), (x1, y1, z1) = grid.start, grid.stop
    return np.ascontiguousarray(cube[x0:x1, y0:y1, z0:z1], dtype=np.float32)

#----------------------------------------------------------------------------
# Robust normalisation. Another generator's raw sigma has its own scale and offset (another activation, another
# density bias; EG3D-FFHQ's raw sigma reaches the hundreds, our demo's lies within about -15..35), plus gen_samples'
# -1000 padding. A slab's robust range is its 1st and 99.9th percentiles (not its min and max: single spikes and the
# padding would set those) with the padding left out, plus its min and max. A cube is mapped linearly so that its
# robust range lands on the median robust range of our bank's slabs, then clipped to their median [min, max], so
# padding and spikes read as our empty space and our densest interior. A reward that min-max normalises each slab
# (the bundled ones: 'self_minmax') ignores the linear part; for it the clip is what counts.

PERCENTILES = (1.0, 99.9)


def volume_range(volume, percentiles=PERCENTILES, ignore=PAD_VALUE):
    """{'low', 'high', 'min', 'max'} of a volume's values other than `ignore` (low and high: the percentiles)."""
    values = np.asarray(volume, dtype=np.float32).ravel()
    values = values[values != ignore]
    if not len(values):
        raise ValueError(f'every value is the padding {ignore:g}')
    low, high = np.percentile(values, percentiles)
    return dict(low=float(low), high=float(high), min=float(values.min()), max=float(values.max()))


def normalise(volume, source, reference):
    """volume mapped linearly so that source's robust range (volume_range) lands on reference's, then clipped to
    reference's [min, max]."""
    a, b, c, d = source['low'], source['high'], reference['low'], reference['high']
    if not b > a:
        raise ValueError(f'its sigma is constant between the {PERCENTILES[0]:g}th and {PERCENTILES[1]:g}th percentiles '
            f'({a:g}); it cannot be normalised')
    mapped = (np.asarray(volume, dtype=np.float32) - a) * np.float32((d - c) / (b - a)) + np.float32(c)
    return np.clip(mapped, reference['min'], reference['max']).astype(np.float32)

#----------------------------------------------------------------------------
# Positive sigma per source, streamed (a bank may not fit in memory): histogram counts on fixed log bins, and
# every volume's robust range. The bins reach below float16's smallest subnormal (6e-8; banks may store float16).

HISTOGRAM_EDGES = np.geomspace(1e-8, 1e6, 14 * 4 + 1)     # 4 bins per decade.


class SigmaStats:
    """Statistics of one source's raw sigma volumes, added one at a time."""

    def __init__(self,
        edges       = HISTOGRAM_EDGES,  # Bin edges for positive sigma; values outside them are counted apart.
        percentiles = PERCENTILES,      # The robust range of each volume (volume_range).
    ):
        self.edges, self.percentiles = np.asarray(edges, dtype=np.float64), percentiles
        self.counts = np.zeros(len(self.edges) - 1, dtype=np.int64)
        self.values, self.padding, self.outside, self.ranges = 0, 0, 0, []

    def add(self, volume):
        """Count a volume's positive values and padding, keep its robust range; returns the volume."""
        v = np.asarray(volume, dtype=np.float32).ravel()
        positive = v[v > 0]
        counts = np.histogram(positive, self.edges)[0]
        self.counts += counts
        self.outside += len(positive) - int(counts.sum())
        self.values += len(v)
        self.padding += int(np.count_nonzero(v == PAD_VALUE))
        self.ranges.append(volume_range(v, self.percentiles))
        return volume

    @property
    def positive(self):
        return int(self.counts.sum()) + self.outside

    def range(self):
        """The median over the volumes of each entry of their robust ranges."""
        return {key: float(np.median([r[key] for r in self.ranges])) for key in ('low', 'high', 'min', 'max')}

    def density(self):
        """(bin centres, probability density of the positive values per unit sigma; nan in empty bins). Values
        outside the bins count in the total, so a source's curve integrates to its share inside them."""
        centres = np.sqrt(self.edges[:-1] * self.edges[1:])
        density = self.counts / max(self.positive, 1) / np.diff(self.edges)
        return centres, np.where(self.counts > 0, density, np.nan)

    def summary(self):
        return dict(volumes=len(self.ranges), values=self.values, positive=self.positive,
            positive_fraction=self.positive / max(self.values, 1), positive_outside_bins=self.outside,
            padding=self.padding, range=self.range())


def plot_sigma_histograms(curves, path, title='Positive raw sigma per source'):
    """Log-log histogram PNG: per (label, SigmaStats, SigmaStats after normalising or None), a solid line as read
    and a dashed one in the same colour as normalised. Empty bins are skipped, not drawn as zero."""
    plt = report_plots._pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    used = []
    for index, (label, stats, normalised) in enumerate(curves):
        colour = f'C{index % 10}'
        for line, style, name in ((stats, '-', label), (normalised, '--', f'{label}, normalised')):
            if line is None or not line.positive:
                continue
            x, y = line.density()
            keep = np.isfinite(y)
            ax.loglog(x[keep], y[keep], style, color=colour, marker='.', markersize=3, linewidth=1.2,
                label=f'{name} ({line.positive:,} of {line.values:,} values > 0)')
            used.append(x[keep])
    if used:
        span = np.concatenate(used)
        ax.set_xlim(span.min() / 2, span.max() * 2)
        ax.legend(loc='best', fontsize=7)
    else:
        ax.text(0.5, 0.5, 'no positive sigma in any source', transform=ax.transAxes, ha='center')
    ax.set(xlabel='raw sigma (positive values, log bins)', ylabel='probability density', title=title)
    ax.grid(True, which='major', alpha=0.3)
    report_plots._save(fig, path)

#----------------------------------------------------------------------------
# The report: the bank's tails as pictures and meshes, its scores, and the cubes of other generators scored beside it.

def cube_names(paths):
    """A report name per cube file: its base name, or the path as given where base names repeat."""
    bases = [os.path.basename(p) for p in paths]
    return [b if bases.count(b) == 1 else p for b, p in zip(bases, paths)]


def score_cube(reward, path, flip_x=False, reference=None):
    """(score, SigmaStats of the slab as read, SigmaStats after normalising or None) of the cube in `path` on the
    reward's slab (cube_to_slab); CubeError naming the file; rewards.contract.ScoreError when its score is not finite."""
    cube = read_cube(path)
    try:
        slab = cube_to_slab(cube, reward.grid, flip_x=flip_x)
        as_read = SigmaStats()
        as_read.add(slab)
        normalised = None
        if reference is not None:
            slab = cube_to_slab(cube, reward.grid, flip_x=flip_x, reference=reference)
            normalised = SigmaStats()
            normalised.add(slab)
    except ValueError as err:
        raise CubeError(f'{path}: {err}') from None
    return float(reward.score_slabs([slab], names=[path])[0]), as_read, normalised


def report(reward, bank, outdir, reward_path, bank_path, k=4, cubes=None, flip_x=False, robust_normalise=False,
        level=10.0, preview_res=128, batch=8):
    """Score every sample of the bank through the reward's contract and write into outdir (which exists): scores.csv,
    tails.png (the k best and k worst samples), their top*/bottom* PLYs, each cube of `cubes` ({path: N}, read and
    checked by the caller) scored on the same slab, sigma_histogram.png and report.json/.html. Returns the summary.
    BankError for a bank slab that cannot be read, CubeError for a cube."""
    cubes = cubes or {}
    bank_stats = SigmaStats()
    with tqdm(total=len(bank), desc='scoring the bank', unit='sample') as bar:
        scores = score_bank(reward, bank, stats=bank_stats, batch=batch, progress=bar.update)
    write_scores(os.path.join(outdir, 'scores.csv'), dict(zip(bank.ids, scores.tolist())))
    top, bottom = rank(bank.ids, scores, k)
    shown = bank.slabs(sorted({i for i, _ in top + bottom}))    # Read once already: they are finite.
    with tqdm(total=2, desc='strip and meshes', unit='step') as bar:
        plot_strip([(f'top {len(top)}', top), (f'bottom {len(bottom)}', bottom)], shown, reward.grid,
            os.path.join(outdir, 'tails.png'), level, preview_res,
            title=f'{os.path.basename(reward_path)} on {len(bank)} samples of {os.path.basename(os.path.abspath(bank_path))}'
                f' (three-quarter | profile, sigma >= {level:g})')
        bar.update()
        meshes = write_meshes(top, shown, reward.grid, outdir, 'top', level) + \
            write_meshes(bottom, shown, reward.grid, outdir, 'bottom', level)
        bar.update()

    reference = bank_stats.range() if robust_normalise else None
    curves, cube_report = [(f'bank ({len(bank)} slabs)', bank_stats, None)], {}
    mean, std = float(scores.mean()), float(scores.std())
    with tqdm(total=len(cubes), desc='scoring cubes', unit='cube', disable=not cubes) as bar:    # Closed (its line
        for path, name in zip(cubes, cube_names(list(cubes))):                                  # ended) on an error.
            score, as_read, normalised = score_cube(reward, path, flip_x, reference)
            curves.append((name, as_read, normalised))
            cube_report[name] = dict(path=os.path.abspath(path), resolution=cubes[path],
                resampled=cubes[path] != reward.grid.resolution, score=score, z_score=(score - mean) / max(std, 1e-12),
                as_read=as_read.summary(), normalised=normalised.summary() if normalised else None)
            bar.update()
    plot_sigma_histograms(curves, os.path.join(outdir, 'sigma_histogram.png'))

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
    return summary

#----------------------------------------------------------------------------
