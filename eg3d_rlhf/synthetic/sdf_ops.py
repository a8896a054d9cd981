"""Signed-distance primitives and smooth CSG on point batches stored as separate x, y, z tensors."""

import torch

#----------------------------------------------------------------------------
# Points and parameters are V(x, y, z) with each component a 1-D tensor [P] (or a float, broadcast).
# Contiguous per-component tensors keep every operation a flat elementwise loop, which on a CPU is several
# times faster than broadcasting [P, 3] against [P, 1]. Distances are tensors [P], negative inside.

class V:
    __slots__ = ('x', 'y', 'z')

    def __init__(self, x, y, z):
        self.x, self.y, self.z = x, y, z

    @staticmethod
    def of(points):
        """V of a tensor [P, 3]."""
        return V(*points.T.contiguous().unbind(0))

    def stack(self):
        """Tensor [P, 3]."""
        ref = next(c for c in (self.x, self.y, self.z) if torch.is_tensor(c))
        return torch.stack([c if torch.is_tensor(c) else torch.full_like(ref, c) for c in (self.x, self.y, self.z)], dim=-1)

    def _zip(self, other, op):
        if isinstance(other, V):
            return V(op(self.x, other.x), op(self.y, other.y), op(self.z, other.z))
        return V(op(self.x, other), op(self.y, other), op(self.z, other))

    def __add__(self, o): return self._zip(o, lambda a, b: a + b)
    def __sub__(self, o): return self._zip(o, lambda a, b: a - b)
    def __mul__(self, o): return self._zip(o, lambda a, b: a * b)
    def __truediv__(self, o): return self._zip(o, lambda a, b: a / b)
    __radd__ = __add__
    __rmul__ = __mul__
    def __neg__(self): return V(-self.x, -self.y, -self.z)
    def __getitem__(self, mask): return V(*(c[mask] if torch.is_tensor(c) else c for c in (self.x, self.y, self.z)))

    def put(self, mask, other):
        """Copy with the components at `mask` replaced by those of `other` (a V of mask.sum() values)."""
        def one(c, o):
            c = c.clone()
            c[mask] = o
            return c
        return V(one(self.x, other.x), one(self.y, other.y), one(self.z, other.z))

    def dot(self, o):
        return self.x * o.x + self.y * o.y + self.z * o.z

    def norm(self):
        return (self.x * self.x + self.y * self.y + self.z * self.z) ** 0.5

    def mirror(self):
        """(|x|, y, z): one right-hand feature serves both sides."""
        return V(self.x.abs(), self.y, self.z)

#----------------------------------------------------------------------------

def sphere(p, centre, radius):
    """Exact distance to a sphere."""
    return (p - centre).norm() - radius


def ellipsoid(p, centre, radii):
    """Distance bound to an axis-aligned ellipsoid.

    Outside and near the surface: k0 (k0 - 1) / k1 with k0 = |q/r|, k1 = |q/r^2| (exact on the surface, with a
    unit gradient). That expression tends to 0 at the centre, so deeper inside it is replaced by the bound
    (k0 - 1) min(r) where that is lower: the scaled ellipsoid through q lies at least (1 - k0) min(r) inside.
    """
    q = p - centre
    k0 = (q / radii).norm()
    k1 = (q / (radii * radii)).norm().clamp(min=1e-9)
    d = k0 * (k0 - 1) / k1
    r_min = torch.minimum(torch.minimum(torch.as_tensor(radii.x), torch.as_tensor(radii.y)), torch.as_tensor(radii.z))
    return torch.where(k0 < 1, torch.minimum(d, (k0 - 1) * r_min), d)


def round_cone(p, a, b, ra, rb):
    """Exact distance to the convex hull of spheres (a, ra) and (b, rb); requires |ra - rb| < |b - a|.

    In the plane of the axis: h along the axis from a, q away from it. The flank is the line tangent to both
    circles; with sin(alpha) = (ra - rb) / L its normal is n = (sin, cos) and its direction s = (cos, -sin).
    A point whose coordinate along s falls before the tangent point of circle a (at 0) is nearest to sphere a,
    after the tangent point of circle b (at L cos) to sphere b, otherwise to the flank (distance (h, q).n - ra).
    """
    ab = b - a
    length = ab.norm()
    pa = p - a
    h = pa.dot(ab) / length
    q = (pa.dot(pa) - h * h).clamp(min=0).sqrt()
    sin = (ra - rb) / length
    cos = (1 - sin * sin) ** 0.5
    t = h * cos - q * sin
    flank = h * sin + q * cos - ra
    to_a = (h * h + q * q).sqrt() - ra
    to_b = ((h - length) ** 2 + q * q).sqrt() - rb
    return torch.where(t < 0, to_a, torch.where(t > length * cos, to_b, flank))

#----------------------------------------------------------------------------
# Smooth CSG. Quadratic polynomial blend of width k: min(a, b) - k/4 (1 - |a - b| / k)^2 where |a - b| < k,
# exactly the hard min/max elsewhere (so a defect leaves the distance bit-identical away from its reach).

def smin(a, b, k):
    """Smooth union of two distances."""
    h = (1 - (a - b).abs() / k).clamp(min=0)
    return torch.minimum(a, b) - 0.25 * k * h * h


def smax(a, b, k):
    """Smooth intersection of two distances; smax(a, -b, k) carves b out of a."""
    return -smin(-a, -b, k)

#----------------------------------------------------------------------------
