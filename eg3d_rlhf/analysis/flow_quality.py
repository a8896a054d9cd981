"""How good a multi-stage flow generator is: whole heads, stages that agree, diversity against its data, conditions."""

import itertools
import json
import os

import numpy as np
import torch
from tqdm import tqdm

from dnnlib.util import atomic_write
from eg3d_rlhf.analysis import report_plots
from eg3d_rlhf.analysis.shapes import volume_shape
from eg3d_rlhf.generators.flow import VolumeField
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.geometry.sigma import CubeGrid, SlabCrop, slab_grid

#----------------------------------------------------------------------------
# Three figures per sample of a FlowGenerator, all from one pipeline pass:
# - one head: the share of the level surface's area (on a CubeGrid, gen_samples' border) in its largest component;
# - structure IoU: the first stage's decoded structure against the structure of the finished asset (the first
#   stage's decode of its encode), at the first stage's resolution: how far the later stages kept to the plan;
# - slab: raw sigma on the face slab, for diversity (mean pairwise RMS distance, within and across conditions),
#   set beside the same figure of the training data when the caller gives its volumes.

def structure_iou(pipeline, sample):
    """IoU [N] between the first stage's decoded structure and the structure encoded back from the finished assets."""
    first = pipeline.stages[0]
    drawn = first.decode(sample.runs[0].x1, None)
    final = first.decode(first.encode(sample.sigma, None), None)
    if drawn.dtype != torch.bool or drawn.shape != final.shape:
        raise ValueError(f'the first stage of {pipeline.name!r} does not decode to a boolean structure')
    inter = (drawn & final).flatten(1).sum(1).double()
    union = (drawn | final).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), 1.0).cpu().numpy()


def pairwise_rms(slabs, block=65536):
    """Mean over pairs of the RMS difference of slabs [N, ...] (a tensor or array of any float dtype), and the pairs'
    count. Squared distances are summed over blocks of `block` voxels in float64, so no float64 copy of the whole
    set is made (the reward panel's 64 slabs of 300k voxels would need 150 MB)."""
    x = torch.as_tensor(np.asarray(slabs)).flatten(1)
    n, size = x.shape
    if n < 2:
        return float('nan'), 0
    squared = torch.zeros(n, n, dtype=torch.float64)
    for start in range(0, size, block):
        part = x[:, start : start + block].double()
        squared += torch.cdist(part, part).square()
    i, j = torch.triu_indices(n, n, 1)
    return float((squared[i, j] / size).sqrt().mean()), len(i)


def diversity(slabs, conditions):
    """Mean pairwise RMS slab distance over all samples, within one condition and across conditions."""
    slabs, conditions = torch.as_tensor(slabs), list(conditions)
    within = [pairwise_rms(slabs[[k for k, c in enumerate(conditions) if c == value]]) for value in set(conditions)]
    pairs = sum(n for _, n in within)
    overall, all_pairs = pairwise_rms(slabs)
    within_mean = sum(d * n for d, n in within if n) / pairs if pairs else float('nan')
    across = (overall * all_pairs - within_mean * pairs) / (all_pairs - pairs) if all_pairs > pairs else float('nan')
    return dict(all=overall, within_condition=within_mean, across_conditions=across)


def surface_lumpiness(sdf, voxel, band=2.0):
    """How lumpy a surface is at the scale a person sees: the mean |sdf - gaussian(sdf)| (a Gaussian of one voxel)
    over the voxels within one voxel of the surface, in voxels, of a signed distance [R, R, R] in world units on a
    grid of spacing `voxel`, truncated at `band` voxels (so fields of any truncation compare alike). A smooth
    surface's SDF is nearly linear across a voxel, so smoothing moves it little; patch seams, speckle and steps move
    it a lot (the first bundled flow model's samples read about 2x its training heads)."""
    import scipy.ndimage
    d = np.clip(np.asarray(sdf, dtype=np.float64) / voxel, -band, band)
    near = np.abs(d) <= 1
    if not near.any():
        return float('nan')
    return float(np.abs(d - scipy.ndimage.gaussian_filter(d, 1.0))[near].mean())


def lumpiness_of_volume(volume, cube_length, empty, to_sdf, resolution=64):
    """surface_lumpiness of a raw sigma volume [R, R, R] resampled (trilinearly) onto the resolution^3 cube, the
    scale it is judged at whatever the model's own grid."""
    grid = CubeGrid(resolution, cube_length=cube_length)
    fine = VolumeField(volume.reshape(1, *volume.shape[-3:]), cube_length, empty).sample_grid(grid)[0]
    return surface_lumpiness(to_sdf(fine.cpu()), grid.voxel_size)


def voxel(cube_length, volumes):
    """The spacing of volumes [N, R, R, R] on a cube of side cube_length (CubeGrid's: L / (R - 1))."""
    return cube_length / (volumes.shape[-1] - 1)


def volume_slabs(volumes, cube_length, resolution, empty):
    """Raw sigma on the face slab of the resolution^3 cube [N, *slab] of volumes [N, R, R, R]."""
    grid = slab_grid(resolution, cube_length=cube_length, crop=SlabCrop())
    return VolumeField(volumes, cube_length, empty).sample_grid(grid)

#----------------------------------------------------------------------------

def flow_report(generator, seeds, outdir, conditions=None, resolution=128, level=10.0, threshold=0.9,
        slab_resolution=128, data_volumes=None, columns=6, to_sdf=None, data_sdf=None):
    """Draw every sample (each seed under each of `conditions`) of a FlowGenerator once; write report.json/.html,
    samples.jsonl, conditions.png (a row per condition: the first `columns` seeds' pictures) and largest_fraction.png into outdir;
    data_volumes (raw sigma [M, R, R, R] of training assets) give the diversity figure its yardstick; to_sdf (raw
    sigma -> signed distance in world units, the family's own map) adds each sample's surface_lumpiness on the cube
    of data_sdf's resolution (64 without it), and data_sdf's (true signed distances [M, L, L, L] of training heads,
    world units) beside it."""
    lump_res = 64 if data_sdf is None else data_sdf.shape[-1]
    keys = generator.keys(seeds, conditions)
    grid = CubeGrid(resolution, cube_length=generator.cube_length)
    os.makedirs(outdir, exist_ok=True)
    per_sample, slabs, pictures = [], [], {}
    for seed, condition in tqdm(keys, desc='flow samples', unit='sample'):
        sample = generator.draw([seed], condition)[0]
        volume = sample.sigma
        field_volume = VolumeField(volume, generator.cube_length, generator.empty_sigma).sample_grid(grid)[0]
        _, stats = volume_shape(field_volume.cpu().numpy(), grid, level)
        stats.update(id=generator.sample_id(seed, condition), structure_iou=float(structure_iou(generator.pipeline,
            sample)[0]))
        if to_sdf is not None:
            stats['lumpiness'] = lumpiness_of_volume(volume, generator.cube_length, generator.empty_sigma, to_sdf, lump_res)
        per_sample.append(stats)
        slabs.append(volume_slabs(volume, generator.cube_length, slab_resolution, generator.empty_sigma)[0])
        if seed in seeds[:columns]:
            pictures[(condition, seed)] = preview.rgb_picture(generator.render(volume)[0])

    fractions = np.array([s['largest_fraction'] for s in per_sample])
    ious = np.array([s['structure_iou'] for s in per_sample])
    summary = dict(**generator.identity(), **generator.settings(), samples=len(keys), level=level,
        mesh_resolution=resolution, threshold=threshold, one_head=int((fractions >= threshold).sum()),
        one_head_fraction=float((fractions >= threshold).mean()), median_largest_fraction=float(np.median(fractions)),
        structure_iou=dict(mean=float(ious.mean()), min=float(ious.min())),
        diversity=dict(slab_resolution=slab_resolution, generated=diversity(torch.stack(slabs), [c for _, c in keys])))
    if data_volumes is not None:
        data = volume_slabs(data_volumes, generator.cube_length, slab_resolution, generator.empty_sigma)
        summary['diversity']['training_data'] = dict(heads=len(data), all=pairwise_rms(data)[0])
        summary['diversity']['ratio'] = summary['diversity']['generated']['all'] / summary['diversity']['training_data']['all']
    if to_sdf is not None:
        summary['lumpiness'] = dict(resolution=lump_res, generated=float(np.mean([s['lumpiness'] for s in per_sample])))
        if data_sdf is not None:
            data = [surface_lumpiness(v, voxel(generator.cube_length, v[None])) for v in data_sdf]
            summary['lumpiness'].update(training_data=float(np.mean(data)),
                ratio=summary['lumpiness']['generated'] / float(np.mean(data)))

    rows = sorted({c for c, _ in pictures}, key=lambda c: -1 if c is None else c)
    grid_pictures = [pictures[(c, s)] for c, s in itertools.product(rows, seeds[:columns]) if (c, s) in pictures]
    preview.save_picture(preview.tile(grid_pictures, columns=min(columns, len(seeds))), os.path.join(outdir, 'conditions.png'))
    report_plots.plot_fraction_histogram(fractions, threshold, os.path.join(outdir, 'largest_fraction.png'))
    report_plots.write_report(outdir, 'Flow generator samples', summary, ['conditions.png', 'largest_fraction.png'])
    with atomic_write(os.path.join(outdir, 'samples.jsonl'), 'w') as f:
        f.writelines(json.dumps(s) + '\n' for s in per_sample)
    return summary

#----------------------------------------------------------------------------
