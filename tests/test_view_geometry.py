"""Rendered geometry from several views: normals of depth maps, the foreground, and tuned-vs-original changes."""

import math

import numpy as np
import pytest
import torch

from eg3d_rlhf.analysis import view_geometry
from eg3d_rlhf.generators.eg3d import EG3DGenerator
from tests.helpers.eg3d import tiny_generator

pytestmark = pytest.mark.usefixtures('one_thread')

#----------------------------------------------------------------------------

def test_normals_of_a_facing_plane_and_of_a_plane_turned_45_degrees():
    focal, d0 = 50.0, 2.5
    flat = view_geometry.normals(torch.full([9, 9], d0, dtype=torch.float64), focal)
    assert torch.allclose(flat, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)[:, None, None])
    # The plane z = d0 + x seen through a pinhole: the pixel u (from the centre) sees z = d0 f / (f - u).
    u = torch.arange(-4, 5, dtype=torch.float64)
    turned = (d0 * focal / (focal - u))[None].expand(9, 9)
    n = view_geometry.normals(turned, focal)[:, 4, 4]
    assert math.degrees(math.acos(float(n[2]))) == pytest.approx(45, abs=0.5) and n[0] < 0 and abs(float(n[1])) < 1e-12


def test_foreground_keeps_the_head_near_in_every_map_eroded_by_one():
    depths = torch.full([2, 7, 12], 3.2)
    depths[:, 1:6, 1:6] = 2.4                                            # A 5x5 head in both.
    depths[1, 1, 1] = 3.2                                                # The tuned one lost a corner pixel.
    depths[:, 2:5, 8:11] = 2.3                                           # A smaller near patch (grazing rays).
    mask = view_geometry.foreground(depths, 2.25, 3.3)
    assert mask.sum() == 9 - 1 and mask[2:5, 2:5].sum() == 8 and not mask[2, 2]


@pytest.fixture(scope='module')
def pair():
    """Tiny EG3D adapters: the original and one whose decoder makes every density larger (the surface moves)."""
    sides = {}
    for side, shift in (('original', 0.0), ('tuned', 2.0)):
        G = tiny_generator().eval()
        with torch.no_grad():
            G.decoder.net[-1].bias[0] += 10.0 + shift                    # Densities straddle the head's surface.
        sides[side] = EG3DGenerator(G)
    return sides


def test_a_generator_against_itself_changes_nothing(pair):
    rows, maps = view_geometry.view_changes({'original': pair['original'], 'tuned': pair['original']}, [0, 1], yaws=(0.0, 0.4))
    assert [r['yaw'] for r in rows] == [0.0, 0.4] and all(r['samples'] == 2 for r in rows)
    for r in rows:
        assert r['head_samples'] == 0 or (r['depth_change'] == 0 and r['normal_turn_deg'] == pytest.approx(0, abs=1e-3))
        assert r['image_psnr_db'] == float('inf') and r['identical_images'] == 2
    assert len(maps['original']) == 2 * 2 and np.array_equal(maps['original'][0], maps['tuned'][0])


def test_a_moved_surface_shows_from_every_view(pair, tmp_path):
    rows, maps = view_geometry.view_changes(pair, [0, 1, 2])
    assert len(rows) == len(view_geometry.YAWS)
    assert all(r['head_samples'] > 0 and r['depth_change'] > 0 and r['normal_turn_deg'] > 0 for r in rows)
    assert all(np.isfinite(r['image_psnr_db']) for r in rows)
    view_geometry.save_views(maps, view_geometry.YAWS, str(tmp_path / 'views.png'), scale=1)
    import PIL.Image
    with PIL.Image.open(tmp_path / 'views.png') as im:
        h, w = maps['original'][0].shape[:2]
        gaps = view_geometry.GAP * (view_geometry.PICTURED - 1)
        assert im.size == (w * len(view_geometry.YAWS), h * 2 * view_geometry.PICTURED + gaps)
    title, header, body = view_geometry.table(rows)
    assert len(body) == len(rows) and len(header) == len(body[0]) and 'views' in title
