"""One sample of a generator shown every way: its picture (from any camera: raw image, depth), slab, mesh, previews."""

import json
import os

import numpy as np
import PIL.Image
import torch

from dnnlib.util import atomic_write
from eg3d_rlhf.analysis import report_plots
from eg3d_rlhf.generators import registry
from eg3d_rlhf.geometry import mesh, preview
from eg3d_rlhf.geometry.sigma import CubeGrid, normalise_sigma_self, slab_grid

#----------------------------------------------------------------------------
# Files written into outdir:
#   image.png               the sample's picture; generators with the 'camera' capability (EG3D) render it from a camera
#                           turned 0.3 rad to the side, with image_raw.png (the neural render) and depth.png beside it
#   sigma_slab.npy          raw sigma on the face slab of the resolution^3 cube
#   mesh.ply                the slab's level surface
#   previews.png            the level surface of the full cube from the front, three-quarter and profile
#   summary.json            the figures below (report.json holds the same; summary.json is the name tools read)
#   report.json/.html       the summary and the pictures

def to_png(path, image, lo, hi):
    """Save a [C, H, W] tensor scaled from [lo, hi] to 8-bit."""
    x = ((image.float() - lo) / (hi - lo)).clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    PIL.Image.fromarray(x.permute(1, 2, 0).squeeze(-1).numpy()).save(path)


def save_views(generator, seed, condition, outdir, neural_res=None):
    """image.png (and, with the 'camera' capability, image_raw.png and depth.png); returns the names written."""
    if not registry.has(generator, 'camera'):
        preview.save_picture(generator.picture(seed, condition), os.path.join(outdir, 'image.png'))
        return ['image.png']
    views = generator.camera_views(seed, neural_res=neural_res)
    to_png(os.path.join(outdir, 'image.png'), views['image'], -1, 1)
    to_png(os.path.join(outdir, 'image_raw.png'), views['image_raw'], -1, 1)
    depth = views['depth']
    to_png(os.path.join(outdir, 'depth.png'), -depth, -float(depth.max()), -float(depth.min()) + 1e-8)
    return ['image.png', 'image_raw.png', 'depth.png']


def report(generator, seed, condition, outdir, resolution=64, level=10.0, neural_res=None, network=None):
    """Draw one sample (seed, condition) of a Generator3D and write the files above into outdir; returns the summary.
    network: what the summary names as its source (the file, or a description of an in-memory generator)."""
    os.makedirs(outdir, exist_ok=True)
    pictures = save_views(generator, seed, condition, outdir, neural_res)
    field = generator.field([seed], condition)
    grid = slab_grid(resolution, cube_length=generator.cube_length)
    sigma = field.sample_grid(grid)[0].numpy()
    np.save(os.path.join(outdir, 'sigma_slab.npy'), sigma)
    verts, faces = mesh.extract_mesh(sigma, grid, level=level)
    mesh.write_ply(os.path.join(outdir, 'mesh.ply'), verts, faces)
    cube = CubeGrid(resolution, cube_length=generator.cube_length)
    views = preview.render_views(field.sample_grid(cube)[0].numpy(), cube, level=level, resolution=192)
    preview.save_picture(np.concatenate(list(views.values()), axis=1), os.path.join(outdir, 'previews.png'))
    summary = dict(network=network, id=generator.sample_id(seed, condition), seed=seed, slab_shape=list(grid.shape),
        sigma_min=float(sigma.min()), sigma_max=float(sigma.max()),
        normalised_mean=float(normalise_sigma_self(sigma).mean()), mesh_level=level, mesh_vertices=len(verts), mesh_faces=len(faces))
    with atomic_write(os.path.join(outdir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    report_plots.write_report(outdir, f'Generator demo: {summary["id"]}', summary, pictures + ['previews.png'])
    return summary

#----------------------------------------------------------------------------
