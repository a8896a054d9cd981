"""Banks of synthetic heads drawn as true density under their own family (the condition), with previews, as sample_bank
writes them: the five-criterion ratings study's banks under test."""

import os

import numpy as np
import PIL.Image

from eg3d_rlhf.data import bank as B
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.geometry.sigma import slab_grid
from eg3d_rlhf.synthetic import family, flow_data
from tests.helpers.banks import slab_description

#----------------------------------------------------------------------------

RES = 40                    # Slabs of 20 x 22 x 20.
PREVIEW = 48                # Preview size in pixels.
CONDITIONS = 8              # The bundled flow model's head families.


def drawn_heads(count, seed=7, spread=0.15, grid=None):
    """{id 'cCC-seedNNNNNN': (true density slab, condition)} of flow heads 0..count-1 of dataset `seed` (not the
    family's seed 0, so none is a training head), each under its own family."""
    grid = slab_grid(RES) if grid is None else grid
    heads = {}
    for index in range(count):
        sample = flow_data.flow_head(seed, index, spread)
        condition = flow_data.head_family(sample.head, CONDITIONS)
        heads[f'c{condition:02d}-seed{index:06d}'] = (family.density_slab(sample, grid), condition)
    return heads


def head_bank(root, heads):
    """A bank laid out like sample_bank's of {id: (slab, condition)}: slab, three previews, an RGB picture, meta.json
    with the condition, bank.json. Returns the folder."""
    grid, slab = slab_grid(RES), slab_description(RES)
    os.makedirs(root)
    B.write_json(os.path.join(root, B.BANK_FILE), dict(preview_level=10.0, preview_res=PREVIEW, mesh_convention='ours',
        conditions=CONDITIONS, slab=slab))
    for sample_id, (volume, condition) in sorted(heads.items()):
        folder = os.path.join(root, sample_id)
        os.makedirs(folder)
        np.save(os.path.join(folder, B.SLAB_FILE), volume.astype(np.float32))
        for view, picture in preview.render_views(volume, grid, level=10.0, resolution=PREVIEW).items():
            preview.save_picture(picture, os.path.join(folder, B.preview_file(view)))
        PIL.Image.new('RGB', (16, 16), (90, 60 + 20 * condition, 90)).save(os.path.join(folder, B.IMAGE_FILE))
        B.write_json(os.path.join(folder, B.META_FILE), dict(id=sample_id, condition=condition, conditions=CONDITIONS,
            slab=slab))
    return str(root)

#----------------------------------------------------------------------------
