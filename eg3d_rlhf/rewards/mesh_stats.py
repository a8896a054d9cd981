"""Statistics of the marching-cubes mesh people look at (roughness, bending, pieces, handles), differentiable in sigma."""

import numpy as np
import torch
from torch import nn

from eg3d_rlhf.geometry import mesh
from eg3d_rlhf.geometry.sigma import closed_slab
from torch_utils import misc

#----------------------------------------------------------------------------
# People judge the mesh of the closed slab at a density level (geometry.sigma.closed_slab), not the density
# itself; its flaws (triangulation roughness, floaters, holes) live in the mesh and hardly in any cell average of
# the density. Marching cubes decides the connectivity (no gradient); each vertex lies on a grid edge at
# t = (level - s0) / (s1 - s0), recomputed here from sigma, so every length, area and offset below is differentiable.
# Per level, in voxel units, means over vertices unless said:
#   vertices, area, edge_length, edge_spread    size and sampling of the surface (edge_spread: sd of edge lengths)
#   valence                                     neighbours per vertex
#   roughness                                   |umbrella offset|: mean neighbour minus the vertex
#   bending, abs_bending                        the offset along the vertex normal (signed: mean curvature), its size
#   irregularity                                the offset across the normal (uneven triangles)
#   vertex_area                                 a third of the adjacent triangles' area
#   cap_share, cap_roughness                    vertices on the flat faces where the slab cuts the head, their roughness
#   pieces, floater_share, handles              connected pieces, surface share outside the largest, handles (genus)

STATS = ('vertices', 'area', 'edge_length', 'edge_spread', 'valence', 'roughness', 'bending', 'abs_bending',
    'irregularity', 'vertex_area', 'cap_share', 'cap_roughness', 'pieces', 'floater_share', 'handles')


def edge_vertices(volume, verts, level):
    """Differentiable positions [V, 3] of marching-cubes vertices (index units, numpy [V, 3]) of `volume` [X, Y, Z]:
    each lies on the grid edge from its floor corner along the axis of its fractional coordinate."""
    base = np.floor(verts).astype(np.int64)
    axis = np.argmax(verts - base, axis=1)
    step = np.eye(3, dtype=np.int64)[axis]
    far = np.minimum(base + step, np.array(volume.shape) - 1)
    s0 = volume[base[:, 0], base[:, 1], base[:, 2]]
    s1 = volume[far[:, 0], far[:, 1], far[:, 2]]
    diff = s1 - s0
    t = (level - s0) / torch.where(diff.abs() > 1e-12, diff, torch.ones_like(diff))
    pos = torch.as_tensor(base, dtype=volume.dtype, device=volume.device)
    return pos + t[:, None] * torch.as_tensor(step, dtype=volume.dtype, device=volume.device)


def mesh_statistics(volume, level, precision=torch.float16):
    """[len(STATS)] statistics of the closed mesh of one raw sigma slab [X, Y, Z] at `level` (zeros if it is empty).

    precision: sigma is first rounded to this dtype (gradients pass straight through), the precision fitting keeps a
    bank in, so a slab gives the same mesh and statistics when scored as in the feature table its reward was fitted
    on (counts and sub-percent roughness differences would otherwise shift with the rounding); None = as given.
    """
    misc.assert_shape(volume, [None, None, None])
    if precision is not None:
        limit = torch.finfo(precision).max
        volume = volume + (volume.detach().clamp(-limit, limit).to(precision).to(volume.dtype) - volume.detach())
    padded = closed_slab(volume, level)
    verts_np, faces = mesh.index_mesh(padded.detach().cpu().numpy(), level)           # Meshed in float64 there.
    if len(faces) == 0:
        return volume.new_zeros(len(STATS))
    verts = edge_vertices(padded, verts_np, level)
    n, dev = len(verts), volume.device
    faces_t = torch.as_tensor(faces, device=dev)
    edges = mesh.unique_edges(faces)
    i, j = torch.as_tensor(edges[:, 0], device=dev), torch.as_tensor(edges[:, 1], device=dev)
    valence = torch.bincount(torch.cat([i, j]), minlength=n).clamp(min=1).to(verts.dtype)
    neighbours = torch.zeros_like(verts).index_add_(0, i, verts[j]).index_add_(0, j, verts[i])
    offset = neighbours / valence[:, None] - verts                                  # Umbrella operator.
    a, b, c = (verts[faces_t[:, k]] for k in range(3))
    cross = torch.linalg.cross(b - a, c - a)
    face_area = 0.5 * (cross.square().sum(1) + 1e-20).sqrt()
    normal = torch.zeros_like(verts)
    vertex_area = torch.zeros(n, dtype=verts.dtype, device=dev)
    for k in range(3):
        normal = normal.index_add(0, faces_t[:, k], cross)
        vertex_area = vertex_area.index_add(0, faces_t[:, k], face_area / 3)
    normal = normal / (normal.square().sum(1, keepdim=True) + 1e-20).sqrt()
    along = (offset * normal).sum(1)
    across = ((offset - along[:, None] * normal).square().sum(1) + 1e-20).sqrt()
    rough = (offset.square().sum(1) + 1e-20).sqrt()
    edge_length = ((verts[i] - verts[j]).square().sum(1) + 1e-20).sqrt()
    size = np.array(padded.shape)
    cap = torch.as_tensor(((verts_np < 1) | (verts_np > size - 2)).any(1), dtype=verts.dtype, device=dev)
    count, labels = mesh.vertex_components(n, edges)
    piece = torch.as_tensor(labels[faces[:, 0]], device=dev)
    piece_area = torch.zeros(count, dtype=verts.dtype, device=dev).index_add(0, piece, face_area)
    handles = mesh.handle_count(faces, edges, count)
    constant = lambda v: torch.tensor(float(v), dtype=verts.dtype, device=dev)
    return torch.stack([constant(n), face_area.sum(), edge_length.mean(), edge_length.std(), valence.mean(), rough.mean(),
        along.mean(), along.abs().mean(), across.mean(), vertex_area.mean(), cap.mean(),
        (rough * cap).sum() / cap.sum().clamp(min=1), constant(count), 1 - piece_area.max() / face_area.sum(),
        constant(handles)])


class MeshStatistics(nn.Module):
    """Raw sigma slabs [N, X, Y, Z] -> [N, len(levels) * len(STATS)] statistics of their closed meshes."""

    def __init__(self,
        levels  = (10.0,),              # Density levels meshed (10: the mesh level people see); () = none.
    ):
        super().__init__()
        self.levels = [float(v) for v in levels]
        self.dim = len(self.levels) * len(STATS)

    def forward(self, x):
        misc.assert_shape(x, [None, None, None, None])
        if not self.levels:
            return x.new_zeros([len(x), 0])
        return torch.stack([torch.cat([mesh_statistics(v, level) for level in self.levels]) for v in x])

#----------------------------------------------------------------------------
