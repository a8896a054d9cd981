"""One synthetic sample (head, defects, camera) drawn from (seed, index); its true SDF and density in batches."""

import dataclasses
from typing import Dict

import numpy as np
import torch

from dnnlib import EasyDict
from eg3d_rlhf.synthetic import cameras, defects, heads
from eg3d_rlhf.synthetic.layout import from_dict
from eg3d_rlhf.synthetic.sdf_ops import V

#----------------------------------------------------------------------------
# Sample `index` of dataset `seed` is drawn from numpy's default_rng([seed, index]) in a fixed order: head,
# camera, then defects. It does not depend on the dataset size, and changing defect_rate keeps the heads
# and cameras. A sample has at least one defect with probability defect_rate (1 or 2 distinct kinds).

CUT_Y = -0.47           # The neck ends in a flat cut here, so each head is closed inside the box.
DENSITY_SCALE = 20.0    # density = DENSITY_SCALE * sigmoid(-sdf / eps): level 10 (gen_samples' mesh level) is the surface.
DENSITY_EPS = 0.005     # Default eps of that sigmoid, in world units.


@dataclasses.dataclass
class SyntheticHead:
    seed:       int                 # Dataset seed.
    index:      int                 # Sample index within the dataset.
    head:       heads.HeadParams    # Shape and albedo.
    defects:    Dict[str, object]   # Defect kind -> its parameters (empty for a clean head).
    yaw:        float               # Camera yaw (radians, pi/2 = frontal).
    pitch:      float               # Camera pitch.

    def to_dict(self):
        return dict(seed=self.seed, index=self.index, head=dataclasses.asdict(self.head),
            defects={k: dataclasses.asdict(v) for k, v in self.defects.items()}, yaw=self.yaw, pitch=self.pitch)

    @staticmethod
    def from_dict(d):
        return SyntheticHead(seed=int(d['seed']), index=int(d['index']), head=from_dict(heads.HeadParams, d['head']),
            defects={k: from_dict(defects.KINDS[k], v) for k, v in d['defects'].items()},
            yaw=float(d['yaw']), pitch=float(d['pitch']))

    def label(self):
        """EG3D camera label c [25] (float32 tensor)."""
        return cameras.camera_labels([self.yaw], [self.pitch])[0]


def sample(seed, index, defect_rate=0.0):
    """Draw sample `index` of dataset `seed`."""
    rng = np.random.default_rng([int(seed), int(index)])
    head = heads.sample_head(rng)
    yaw, pitch = cameras.sample_pose(rng)
    result = SyntheticHead(seed=int(seed), index=int(index), head=head, defects={}, yaw=yaw, pitch=pitch)
    if rng.uniform() < defect_rate:
        count = 1 if rng.uniform() < 0.7 else 2
        kinds = [str(k) for k in rng.choice(list(defects.KINDS), size=count, replace=False)]
        surface = lambda direction: find_surface(result, direction)     # Sees the defects drawn so far.
        for kind in sorted(kinds, key=list(defects.KINDS).index):       # Stage order: warps first, unions last.
            result.defects[kind] = defects.sample_defect(kind, rng, surface, head)
    return result

#----------------------------------------------------------------------------
# Batched evaluation. A batch is packed into a table [B, D]: the head layout, then per defect kind an
# enable flag and its layout. `gather` gives every point the parameters of its sample as contiguous
# per-point columns (a defect's only for the points whose sample has it), so points of different samples,
# and any subset of them as the sphere tracer needs, go through one pass.

_OFFSETS = {}
_offset = heads.LAYOUT.dim
for _kind, _layout in defects.LAYOUTS.items():
    _OFFSETS[_kind] = _offset
    _offset += 1 + _layout.dim
TABLE_DIM = _offset


def pack(samples, device='cpu'):
    """Table [B, TABLE_DIM] (float32) of a list of SyntheticHead."""
    table = np.zeros([len(samples), TABLE_DIM])
    for row, s in zip(table, samples):
        row[:heads.LAYOUT.dim] = heads.LAYOUT.pack(s.head)
        for kind, params in s.defects.items():
            o = _OFFSETS[kind]
            row[o] = 1
            row[o + 1:o + 1 + defects.LAYOUTS[kind].dim] = defects.LAYOUTS[kind].pack(params)
    return torch.tensor(table, dtype=torch.float32, device=device)


def gather(table, sample_id):
    """Parameters of points [P] of samples sample_id [P] (indices into table [B, D]).

    Returns EasyDict(head=heads.LAYOUT view, defects={kind: (mask [P], view of that kind over mask)}).
    """
    columns = table.T
    rows = EasyDict(head=heads.LAYOUT.view(columns[:heads.LAYOUT.dim][:, sample_id]), defects={})
    for kind, layout in defects.LAYOUTS.items():
        o = _OFFSETS[kind]
        mask = (table[:, o] > 0.5)[sample_id]
        if mask.any():
            rows.defects[kind] = (mask, layout.view(columns[o + 1:o + 1 + layout.dim][:, sample_id[mask]]))
    return rows


def subset(rows, keep):
    """The gathered parameters of the points selected by the boolean mask keep [P]."""
    return EasyDict(head=EasyDict({k: v[keep] for k, v in rows.head.items()}),
        defects={kind: (mask[keep], EasyDict({k: v[keep[mask]] for k, v in view.items()})) for kind, (mask, view) in rows.defects.items()})


def _head_points(rows, p):
    """Points at which the head itself is evaluated (asymmetry warps them)."""
    if 'asymmetry' in rows.defects:
        mask, view = rows.defects['asymmetry']
        p = p.put(mask, defects.warp_points(view, p[mask]))
    return p


def rows_sdf(rows, p):
    """Signed distance [P] at world points p (V of [P]) with gathered parameters rows."""
    d = heads.head_sdf(rows.head, _head_points(rows, p))
    d = torch.maximum(d, CUT_Y - p.y)
    for kind, (mask, view) in rows.defects.items():
        if defects.STAGE[kind] != 'warp':
            d = d.clone()
            d[mask] = defects.modify_sdf(kind, view, p[mask], d[mask])
    return d


def rows_albedo(rows, p):
    """Albedo [P, 3] at world surface points p (V of [P])."""
    return heads.head_albedo(rows.head, _head_points(rows, p)).stack()


def _gather_points(samples, points):
    """(gathered parameters, V of the flattened points, B, N) for B samples at world points [B, N, 3] or [N, 3]."""
    table = pack(samples, device=points.device)
    if points.ndim == 2:
        points = points.unsqueeze(0).expand(len(samples), -1, -1)
    B, N, _ = points.shape
    assert B == len(samples)
    rows = gather(table, torch.arange(B, device=points.device).repeat_interleave(N))
    return rows, V.of(points.reshape(-1, 3)), B, N


def sdf(samples, points):
    """True signed distance [B, N] of a list of B samples at world points [B, N, 3] (or [N, 3] shared)."""
    rows, p, B, N = _gather_points(samples, points)
    return rows_sdf(rows, p).reshape(B, N)


def albedo(samples, points):
    """Albedo [B, N, 3] of a list of B samples at world points [B, N, 3] (meaningful on or near the surface)."""
    rows, p, B, N = _gather_points(samples, points)
    return rows_albedo(rows, p).reshape(B, N, 3)


def density(samples, points, eps=DENSITY_EPS):
    """True density [B, N]: DENSITY_SCALE * sigmoid(-sdf / eps), a smoothed occupancy whose level 10 is the surface."""
    return DENSITY_SCALE * torch.sigmoid(-sdf(samples, points) / eps)

#----------------------------------------------------------------------------
# Surface search, used to anchor defects on the head.

def find_surface(sample_, direction, steps=256, reach=0.8):
    """(point, unit normal) where the ray from the head centre along `direction` last leaves the surface.

    Two rounds of dense sampling along the ray bracket the crossing to reach / steps^2. The last crossing,
    not the first, so that a hole drilled through the centre does not matter.
    """
    h = sample_.head
    centre = np.array(h.origin) + h.scale * np.array([0.0, 0.0, 0.05])
    direction = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
    lo, hi = 0.0, reach
    for _ in range(2):
        t = np.linspace(lo, hi, steps)
        d = sdf([sample_], torch.tensor(centre + t[:, None] * direction, dtype=torch.float32))[0].numpy()
        crossings = np.nonzero((d[:-1] <= 0) & (d[1:] > 0))[0]
        assert len(crossings), 'the ray from the head centre must leave the head'
        lo, hi = t[crossings[-1]], t[crossings[-1] + 1]
    point = centre + 0.5 * (lo + hi) * direction
    eye = np.eye(3) * 1e-3
    probes = torch.tensor(np.concatenate([point + eye, point - eye]), dtype=torch.float32)
    g = sdf([sample_], probes)[0].numpy()
    normal = g[:3] - g[3:]
    return point, normal / np.linalg.norm(normal)

#----------------------------------------------------------------------------
