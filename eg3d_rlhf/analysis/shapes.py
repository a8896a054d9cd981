"""How often a generator's level-10 mesh is one closed head: connected components per seed, previews, a fakes grid."""

import json
import os

import numpy as np
from tqdm import tqdm

from eg3d_rlhf.geometry import convention as conventions
from eg3d_rlhf.geometry import mesh, preview
from eg3d_rlhf.geometry.sigma import CubeGrid

#----------------------------------------------------------------------------

def volume_shape(volume, grid, level=10.0, convention='ours'):
    """(volume with the mesh convention's border, (x, y, z) order; mesh statistics) of raw sigma [R, R, R] (numpy) on
    a CubeGrid (geometry.convention: 'ours' = gen_samples' border, 'published' = the paper's)."""
    verts, faces = conventions.extract(volume, grid, convention, level=level)
    volume = conventions.bordered(volume, grid, convention)
    fractions = mesh.component_fractions(verts, faces)
    return volume, dict(faces=len(faces), components=len(fractions),
        largest_fraction=float(fractions[0]) if len(fractions) else 0.0, closed=mesh.is_closed(faces))


def seed_shape(generator, seed, grid, level=10.0, condition=None, convention='ours'):
    """(bordered volume, mesh statistics) of one sample of a generators.base.Generator3D (see volume_shape)."""
    volume, stats = volume_shape(generator.field([seed], condition).sample_grid(grid)[0].cpu().numpy(), grid, level,
        convention)
    return volume, dict(id=generator.sample_id(seed, condition), seed=seed, condition=condition, **stats)


def shape_report(generator, seeds, outdir, resolution=128, level=10.0, threshold=0.9, previews=8, conditions=None,
        convention='ours'):
    """Mesh every sample (each seed under each of `conditions`, generator.keys) on the full cube in a mesh convention;
    write report.json, previews.png (the first `previews` samples from three views, the convention's border applied)
    and fakes.png (their pictures) into outdir; returns the report."""
    grid = CubeGrid(resolution, cube_length=generator.cube_length)
    keys = generator.keys(seeds, conditions)
    os.makedirs(outdir, exist_ok=True)
    per_seed, rows = [], []
    for i, (seed, condition) in enumerate(tqdm(keys, desc='meshing', unit='sample')):
        volume, stats = seed_shape(generator, seed, grid, level, condition, convention)
        per_seed.append(stats)
        if i < previews:
            rows.append(np.concatenate(list(preview.render_views(volume, grid, level=level, resolution=128).values()), axis=1))
    single = [s['largest_fraction'] >= threshold for s in per_seed]
    report = dict(**generator.identity(), **generator.settings(), resolution=resolution, level=level,
        mesh_convention=convention, threshold=threshold, num_seeds=len(keys), single_head=int(sum(single)),
        single_head_fraction=float(np.mean(single)), closed_fraction=float(np.mean([s['closed'] for s in per_seed])),
        median_largest_fraction=float(np.median([s['largest_fraction'] for s in per_seed])), seeds=per_seed)
    with open(os.path.join(outdir, 'report.json'), 'w') as f:
        json.dump(report, f, indent=2)
    if rows:
        preview.save_picture(np.concatenate(rows, axis=0), os.path.join(outdir, 'previews.png'))
        pictures = [generator.picture(*key) for key in keys[:previews]]
        preview.save_picture(preview.tile(pictures, columns=8), os.path.join(outdir, 'fakes.png'))
    return report

#----------------------------------------------------------------------------
