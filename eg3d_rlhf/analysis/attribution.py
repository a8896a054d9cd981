"""Which regions make a reward's score: Shapley value sampling and Integrated Gradients (captum), summed per region."""

import os
import time

import numpy as np
import torch
from tqdm import tqdm

from eg3d_rlhf.analysis import regions as regions_plot
from eg3d_rlhf.analysis import report_plots
from eg3d_rlhf.geometry import mesh
from torch_utils import misc

#----------------------------------------------------------------------------
# Both methods explain f(input) - f(baseline), where f is the reward's own scoring path from *raw* sigma (its input
# spec's normalisation and axis order included, so gradients pass through them) and input and baseline are slabs:
# the tuned and the original generator's slab of one seed ("what made the reward rise"), or a bank's slab and a
# reference slab (the bank mean, or empty space). Shapley value sampling treats each region as one player
# (the region volume is captum's feature mask) and is exact in sum for every permutation; Integrated Gradients
# attributes every voxel and is summed per region afterwards.


PASS_VOXELS = 2**20        # Voxels one forward pass of the fast path sees by default (pass_slabs).


def _tensor(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float32)) if not torch.is_tensor(x) else x.float()


def shapley_values(score, x, b, mask, permutations, batch=64, fx=None, fb=None):
    """[N, K] Shapley value sampling of score(x) - score(b) with the K features of mask [X, Y, Z] (ids 0..K-1, every
    voxel in one) as players: what captum's ShapleyValueSampling gives with that mask (the same random orders, one
    torch.randperm(K) per permutation from torch's global generator, and the same float32 sums), but every coalition is
    scored once. A coalition is the set of players already added; orders share the empty and full ones (the baseline,
    the input) and many prefixes (of K = 2 players only {0} and {1} are left to score, against 2 * permutations + 1
    passes through captum), and the coalitions of all N samples are scored `batch` slabs a pass.
    x, b: [N, X, Y, Z] on score's device; fx, fb: their scores [N] when already known (else scored here)."""
    k = int(mask.max()) + 1
    orders = [torch.randperm(k).tolist() for _ in range(permutations)]
    full = (1 << k) - 1
    prefixes = [[sum(1 << f for f in order[:i]) for i in range(k + 1)] for order in orders]
    with torch.no_grad():
        value = {0: score(b) if fb is None else fb, full: score(x) if fx is None else fx}
        todo = sorted({c for p in prefixes for c in p} - set(value))
        per_pass = max(1, batch // len(x))
        for begin in range(0, len(todo), per_pass):
            chunk = todo[begin:begin + per_pass]
            slabs = torch.cat([torch.where(coalition_mask(mask, c)[None], x, b) for c in chunk])
            scores = torch.cat([score(s) for s in slabs.split(batch)])     # At most `batch` slabs a pass.
            for c, v in zip(chunk, scores.split(len(x))):
                value[c] = v
        total = torch.zeros([len(x), k], dtype=torch.float32, device=x.device)
        for order, prefix in zip(orders, prefixes):
            for i, f in enumerate(order):
                total[:, f] += (value[prefix[i + 1]] - value[prefix[i]]).float()
    return total / permutations


def coalition_mask(mask, coalition):
    """Boolean volume of the voxels whose feature is in `coalition` (bit f set: feature f)."""
    bits = [(coalition >> f) & 1 for f in range(int(mask.max()) + 1)]
    return torch.tensor(bits, dtype=torch.bool, device=mask.device)[mask]


def pass_slabs(grid, fast=True):
    """Slabs one forward pass sees by default: as many as hold about PASS_VOXELS voxels (fast; 3 slabs of the demo
    bank's 64x71x65, where 32 IG points in one pass took 2.5x the time of passes of 4), or 64 (the reference path)."""
    return max(1, PASS_VOXELS // int(np.prod(grid.shape))) if fast else 64


def attribute(reward, inputs, baselines, regions, permutations=8, ig_steps=32, batch=4, ig_batch=None, seed=0,
        keep_maps=False, progress=None, names=None, fast=True):
    """Attributions of reward(inputs) - reward(baselines) per region.

    inputs, baselines: raw slabs [N, X, Y, Z] of reward.grid (numpy or torch).
    Returns a dict of numpy arrays: names [R] (regions.names), change [N], shapley / ig / ig_abs / ig_pos / ig_neg
    [N, R], shapley_completeness [N] and ig_completeness [N] (|sum of attributions - change| / max(|change|, 1e-3 |reward|,
    1e-6): float32 rewards resolve about 1e-7 of their size, so a change below 0.1% of the reward counts as that much),
    ig_delta [N] (captum's convergence delta), seconds {shapley, ig} (wall time of each method) and, with keep_maps,
    ig_map [N, X, Y, Z]. `batch` samples are explained at a time; `ig_batch` bounds the slabs one forward pass sees
    (Shapley's perturbations, IG's path points; None: pass_slabs). A score of an input or a baseline that is not finite
    stops it before any sample is explained (rewards.contract.ScoreError naming it: names [N], the samples' names, or
    their index). fast: Shapley by shapley_values (each coalition scored once), IG's convergence delta from the scores
    already taken and ig_batch None meaning pass_slabs; False: captum's ShapleyValueSampling and its delta, which score
    every step again, on passes of 64 slabs (the reference the fast path is tested and benchmarked against; the two
    agree to float32 rounding)."""
    inputs, baselines = _tensor(inputs), _tensor(baselines)
    misc.assert_shape(inputs, [None, *reward.grid.shape])
    misc.assert_shape(baselines, list(inputs.shape))
    reward.model.eval()
    ig_batch = pass_slabs(reward.grid, fast) if ig_batch is None else ig_batch
    names = [f'sample {i}' for i in range(len(inputs))] if names is None else list(names)
    scores = [torch.from_numpy(reward.score_slabs(s, batch=ig_batch, names=n)) for s, n in     # Before any is explained.
        ((inputs, names), (baselines, [f'the baseline of {n}' for n in names]))]
    mask, present = regions.feature_mask()
    column = [regions.names.index(n) for n in present]
    forward = lambda x: reward.score(x)
    # captum, and the matplotlib it imports, cost 1.5 s of every start; --help and --dry-run need neither.
    from captum.attr import IntegratedGradients, ShapleyValueSampling  # pylint: disable=import-outside-toplevel
    shapley_method, ig_method = ShapleyValueSampling(forward), IntegratedGradients(forward)
    out = {k: [] for k in ('change', 'level', 'shapley', 'ig', 'ig_abs', 'ig_pos', 'ig_neg', 'ig_delta', 'ig_map')}
    device = reward.device
    seconds = dict(shapley=0.0, ig=0.0)
    for begin in range(0, len(inputs), batch):
        x = inputs[begin:begin + batch].to(device)
        b = baselines[begin:begin + batch].to(device)
        if fast:
            fx, fb = (s[begin:begin + batch].to(device) for s in scores)
        else:
            with torch.no_grad():
                fx, fb = reward.score(x), reward.score(b)
        out['change'].append((fx - fb).cpu())
        out['level'].append(torch.maximum(fx.abs(), fb.abs()).cpu())
        torch.manual_seed(seed + begin)
        start = time.perf_counter()
        per_region = torch.zeros([len(x), len(regions.names)])
        if fast:
            sv = shapley_values(forward, x, b, mask[0].to(device), permutations, ig_batch, fx, fb)
            per_region[:, column] = sv.cpu()
        else:
            sv = shapley_method.attribute(x, baselines=b, feature_mask=mask.to(device), n_samples=permutations,
                perturbations_per_eval=max(1, ig_batch // len(x)), show_progress=False)
            for k, c in enumerate(column):                  # Every voxel of a region carries the region's value.
                per_region[:, c] = sv[:, mask[0] == k][:, 0].cpu()
        out['shapley'].append(per_region)
        seconds['shapley'] += time.perf_counter() - start
        start = time.perf_counter()
        ig = ig_method.attribute(x, baselines=b, n_steps=ig_steps, internal_batch_size=ig_batch,
            return_convergence_delta=not fast)
        ig, delta = (ig, ig.detach().flatten(1).sum(1) - (fx - fb)) if fast else ig       # captum's delta, as it sums it.
        ig = ig.detach().cpu().double().numpy()
        seconds['ig'] += time.perf_counter() - start
        for name, values in (('ig', ig), ('ig_abs', np.abs(ig)), ('ig_pos', np.maximum(ig, 0)), ('ig_neg', np.minimum(ig, 0))):
            out[name].append(torch.tensor([list(regions.sum_by_region(v).values()) for v in values]))
        out['ig_delta'].append(delta.detach().cpu())
        if keep_maps:
            out['ig_map'].append(torch.from_numpy(ig.astype(np.float32)))
        if progress is not None:
            progress(len(x))
    result = {k: torch.cat(v).double().numpy() for k, v in out.items() if v}
    scale = np.maximum(np.maximum(np.abs(result['change']), 1e-3 * result.pop('level')), 1e-6)
    result['shapley_completeness'] = np.abs(result['shapley'].sum(1) - result['change']) / scale
    result['ig_completeness'] = np.abs(result['ig'].sum(1) - result['change']) / scale
    result['names'], result['seconds'] = list(regions.names), seconds
    return result


# What a region's share of |attribution| is. Shapley gives each region one value per sample; IG gives every voxel one,
# and a region's IG is their sum. Both shares are therefore taken of |the region's value| per sample (shapley_share,
# ig_share). Summing |IG| voxel by voxel instead (voxel_ig_share) counts every surface voxel where input and baseline
# differ, including the +/- pairs that cancel inside a region: the default `sigma` reward's features are stencils
# (central differences, the Laplacian) over soft occupancy, whose gradients alternate in sign between neighbouring
# voxels, so its voxel-level |IG| spreads over the whole surface while the sums per region agree with Shapley's
# (docs/guides/analysis.md, "Why voxel |IG| is diffuse").

def shares(values):
    """[R] share of each region in the mean over samples of |values| [N, R]."""
    mean = np.abs(values).mean(0)
    return mean / max(mean.sum(), 1e-12)


def region_table(result, regions):
    """{name: {shapley, ig, ig_abs, ig_pos, ig_neg (means over samples), voxels, shapley_share, ig_share (shares of the
    mean |region value|), voxel_ig_share (share of the mean voxel-by-voxel |IG| sum)}} plus the Shapley-IG agreement:
    each region's rank under both and Spearman's rho between their mean values across regions."""
    counts = regions.counts()
    mean = {k: result[k].mean(0) for k in ('shapley', 'ig', 'ig_abs', 'ig_pos', 'ig_neg')}
    share = dict(shapley_share=shares(result['shapley']), ig_share=shares(result['ig']), voxel_ig_share=shares(result['ig_abs']))
    import scipy.stats  # pylint: disable=import-outside-toplevel  # 1 s to import; --help and --dry-run need none.
    rank_shapley = scipy.stats.rankdata(-mean['shapley'], method='min')
    rank_ig = scipy.stats.rankdata(-mean['ig'], method='min')
    table = {}
    for i, name in enumerate(result['names']):
        table[name] = dict({k: float(v[i]) for k, v in mean.items()}, voxels=counts[name],
            **{k: float(v[i]) for k, v in share.items()}, rank_shapley=int(rank_shapley[i]), rank_ig=int(rank_ig[i]))
    rho = scipy.stats.spearmanr(mean['shapley'], mean['ig']).statistic if len(table) > 2 else float('nan')
    return table, float(rho)

#----------------------------------------------------------------------------

def coloured_mesh(slab, ig_map, grid, path, level=10.0):
    """PLY of the slab's surface {sigma = level} with each vertex coloured by the IG value of its nearest voxel
    (red: raised the reward, blue: lowered it, white: nothing; symmetric scale at the 99th percentile of |IG|).
    Returns the number of vertices (0: no surface, nothing written)."""
    verts, faces = mesh.extract_mesh(slab, grid, level)
    if len(verts) == 0:
        return 0
    index = np.rint((verts - grid.index_to_world(np.zeros(3))) / grid.voxel_size).astype(np.int64)
    index = np.clip(index, 0, np.asarray(grid.shape) - 1)
    value = np.asarray(ig_map)[index[:, 0], index[:, 1], index[:, 2]]
    top = max(float(np.percentile(np.abs(ig_map), 99)), 1e-12)
    t = np.clip(value / top, -1, 1)[:, None]
    red, blue, white = np.array([214, 39, 40]), np.array([31, 119, 180]), np.array([255, 255, 255])
    colours = np.where(t >= 0, white + t * (red - white), white - t * (blue - white))
    mesh.write_ply(path, verts, faces, colors=np.rint(colours).astype(np.uint8))
    return len(verts)

#----------------------------------------------------------------------------

def plot_region_bars(table, path, title):
    """Bars of each region's mean Shapley value and mean IG sum side by side (the published study's Figure 15)."""
    plt = report_plots._pyplot()
    names = list(table)
    at = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 4))
    ax.bar(at - 0.2, [table[n]['shapley'] for n in names], 0.4, label='Shapley value sampling')
    ax.bar(at + 0.2, [table[n]['ig'] for n in names], 0.4, label='Integrated Gradients (sum)')
    ax.axhline(0, color='black', linewidth=0.6)
    ax.set_xticks(at, names, rotation=30)
    ax.set(ylabel='contribution to the reward change', title=title)
    ax.legend(loc='best')
    report_plots._save(fig, path)


def write_report(outdir, result, regions, info, mean_slab, slabs, grid, meshes=4, level=10.0):
    """report.json ({"regions": {name: {"shapley", "ig", "ig_abs", "voxels", ...}}, "completeness": ..., plus info}),
    report.html, regions.png, attribution.png and IG-coloured PLYs of the first `meshes` samples (their input slab's
    surface). Returns the summary."""
    table, rho = region_table(result, regions)
    os.makedirs(outdir, exist_ok=True)
    regions_plot.plot(regions, mean_slab, os.path.join(outdir, 'regions.png'), level=level)
    plot_region_bars(table, os.path.join(outdir, 'attribution.png'), f'{info["mode"]}: what moved the reward, per region')
    written = []
    for i in range(min(meshes, len(slabs)) if 'ig_map' in result else 0):
        name = f'ig-{info["ids"][i]}.ply'
        if coloured_mesh(slabs[i], result['ig_map'][i], grid, os.path.join(outdir, name), level):
            written.append(name)
    summary = dict(info, regions=table, shapley_ig_spearman=rho, samples=len(result['change']),
        change=dict(mean=float(result['change'].mean()), per_sample=result['change'].tolist()),
        completeness=dict(shapley_max=float(result['shapley_completeness'].max()),
            ig_max=float(result['ig_completeness'].max()), ig_mean=float(result['ig_completeness'].mean()),
            ig_convergence_delta_max=float(np.abs(result['ig_delta']).max())),
        meshes=written, shares='per region, of the mean over samples of |the region\'s Shapley value| (shapley_share) '
            'and of |the sum of its voxels\' IG| (ig_share); voxel_ig_share sums |IG| voxel by voxel, cancelling pairs '
            'of neighbouring voxels included')
    rows = [[n, f'{v["shapley"]:+.4f}', f'{v["ig"]:+.4f}', f'{v["ig_abs"]:.4f}', f'{100 * v["shapley_share"]:.1f}%',
        f'{100 * v["ig_share"]:.1f}%', f'{100 * v["voxel_ig_share"]:.1f}%', v['rank_shapley'], v['rank_ig'], v['voxels']]
        for n, v in table.items()]
    tables = [('Per region (means over samples; shares of |the region\'s value| per sample; voxel |IG| sums |IG| voxel by '
        'voxel, cancelling pairs included)', ['region', 'Shapley', 'IG', 'voxel |IG|', 'share |Shapley|', 'share |IG|',
        'share voxel |IG|', 'rank Shapley', 'rank IG', 'voxels'], rows)]
    report_plots.write_report(outdir, f'Reward attribution ({info["mode"]})', summary, ['attribution.png', 'regions.png'],
        tables=tables)
    return summary

#----------------------------------------------------------------------------

def reference_baselines(inputs, reference='mean'):
    """(baselines like inputs [N, ...], mean slab [...] numpy) of bank mode: every sample's baseline is the reference
    slab, the inputs' mean ('mean') or empty space ('empty': every voxel at the inputs' lowest sigma)."""
    mean_slab = inputs.mean(0).numpy()
    base = torch.from_numpy(mean_slab) if reference == 'mean' else torch.full_like(inputs[0], float(inputs.min()))
    return base.expand_as(inputs).clone(), mean_slab


def report(reward, inputs, baselines, regions, outdir, info, mean_slab, permutations=8, ig_steps=32, batch=4, seed=0,
        meshes=4, level=10.0):
    """Attribute the reward's change from baselines to inputs (raw slabs [N, ...]) per region (attribute), then write
    the report (write_report; info: what was explained, for report.json). Returns the summary."""
    with tqdm(total=len(inputs), desc='attributing', unit='sample') as bar:
        result = attribute(reward, inputs, baselines, regions, permutations=permutations, ig_steps=ig_steps,
            batch=batch, seed=seed, keep_maps=meshes > 0, progress=bar.update, names=info.get('ids'))
    return write_report(outdir, result, regions, info, mean_slab, inputs.numpy(), reward.grid, meshes=meshes, level=level)
