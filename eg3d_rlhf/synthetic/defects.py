"""Geometric defects people dislike, each a parameterised modification of a head's signed distance."""

import dataclasses

import numpy as np
import torch

from eg3d_rlhf.synthetic import sdf_ops
from eg3d_rlhf.synthetic.layout import Layout, Vec3

#----------------------------------------------------------------------------
# Parameters are in world units. Positions are anchored on the surface of the head as it is before the
# defect (found by `surface(direction)`, see world.py), so the same parameters rebuild the same shape.
# Stages: 'warp' moves the query points before the head is evaluated, 'add' perturbs the distance,
# 'csg' carves from or adds to it.

@dataclasses.dataclass
class Asymmetry:
    shift:  Vec3    # Displacement of the head's right half (x > 0).
    width:  float   # Width of the blend across the midline.

@dataclasses.dataclass
class Noise:
    amp:    float   # Largest change of the distance.
    wave0:  Vec3    # Wave vectors (radians per world unit) of three sinusoids.
    wave1:  Vec3
    wave2:  Vec3
    phase:  Vec3    # Their phases.

@dataclasses.dataclass
class Dent:
    centre: Vec3    # Centre of the carved sphere, just outside the surface.
    radius: float   # Its radius.

@dataclasses.dataclass
class Hole:
    entry:  Vec3    # Outer end of the drilled tube (outside the surface).
    end:    Vec3    # Inner end.
    radius: float   # Tube radius.

@dataclasses.dataclass
class Spike:
    base:   Vec3    # Centre of the base sphere, under the surface.
    tip:    Vec3    # Apex.
    radius: float   # Base radius.

@dataclasses.dataclass
class Floater:
    centre: Vec3    # Centre of a detached blob.
    radii:  Vec3    # Its half-axes.

@dataclasses.dataclass
class SharpNose:
    base:   Vec3    # Centre of the nose-tip sphere.
    tip:    Vec3    # Apex of the needle grown from it.
    radius: float   # Base radius.


KINDS = {'asymmetry': Asymmetry, 'noise': Noise, 'dent': Dent, 'hole': Hole, 'spike': Spike, 'floater': Floater, 'sharp_nose': SharpNose}
LAYOUTS = {kind: Layout(cls) for kind, cls in KINDS.items()}
STAGE = {'asymmetry': 'warp', 'noise': 'add', 'dent': 'csg', 'hole': 'csg', 'spike': 'csg', 'floater': 'csg', 'sharp_nose': 'csg'}

#----------------------------------------------------------------------------
# Effects. `v` is the kind's LAYOUT view over the affected points, p their world positions (V of [P]), d [P].

def warp_points(v, p):
    """Asymmetry: shift the right half of the head, blending smoothly across the midline."""
    return p - v.shift * torch.sigmoid(p.x / v.width)


def modify_sdf(kind, v, p, d):
    """Distance after defect `kind` ('add' and 'csg' stages)."""
    if kind == 'noise':
        waves = torch.sin(p.dot(v.wave0) + v.phase.x) + torch.sin(p.dot(v.wave1) + v.phase.y) + torch.sin(p.dot(v.wave2) + v.phase.z)
        return d + v.amp * waves / 3
    if kind == 'dent':
        return sdf_ops.smax(d, -sdf_ops.sphere(p, v.centre, v.radius), 0.01)
    if kind == 'hole':
        return torch.maximum(d, -sdf_ops.round_cone(p, v.entry, v.end, v.radius, v.radius))
    if kind == 'spike':
        return torch.minimum(d, sdf_ops.round_cone(p, v.base, v.tip, v.radius, 0.0))
    if kind == 'floater':
        return torch.minimum(d, sdf_ops.ellipsoid(p, v.centre, v.radii))
    if kind == 'sharp_nose':
        return sdf_ops.smin(d, sdf_ops.round_cone(p, v.base, v.tip, v.radius, 0.0), 0.004)
    raise ValueError(f'no distance modification for defect kind {kind!r}')

#----------------------------------------------------------------------------
# Random draws. `surface(direction)` returns the (point, outward normal) where a ray from the head centre
# along `direction` leaves the head; `head` is the HeadParams (for the nose).

def _direction(rng):
    """A direction toward the visible part of the head: front, sides and top."""
    yaw, elev = rng.uniform(-1.2, 1.2), rng.uniform(-0.4, 0.9)
    return np.array([np.sin(yaw) * np.cos(elev), np.sin(elev), np.cos(yaw) * np.cos(elev)])


def _inside_box(x, margin=0.03):
    return tuple(float(v) for v in np.clip(x, -0.5 + margin, 0.5 - margin))


def _unit(rng):
    x = rng.standard_normal(3)
    return x / np.linalg.norm(x)


def sample_defect(kind, rng, surface, head):
    """Draw the parameters of one defect of `kind`."""
    if kind == 'asymmetry':
        shift = _unit(rng) * np.array([0.4, 1.0, 1.0])
        return Asymmetry(shift=tuple(float(v) for v in shift / np.linalg.norm(shift) * rng.uniform(0.02, 0.045)), width=0.05)
    if kind == 'noise':
        waves = [tuple(float(v) for v in _unit(rng) * rng.uniform(50, 100)) for _ in range(3)]
        return Noise(amp=float(rng.uniform(0.003, 0.006)), wave0=waves[0], wave1=waves[1], wave2=waves[2],
            phase=tuple(float(v) for v in rng.uniform(0, 2 * np.pi, 3)))
    point, normal = surface(_direction(rng))
    if kind == 'dent':
        radius, depth = rng.uniform(0.04, 0.08), rng.uniform(0.015, 0.035)
        return Dent(centre=tuple(float(v) for v in point + normal * (radius - depth)), radius=float(radius))
    if kind == 'hole':
        depth = rng.uniform(0.08, 0.2)
        return Hole(entry=tuple(float(v) for v in point + normal * 0.05), end=tuple(float(v) for v in point - normal * depth),
            radius=float(rng.uniform(0.012, 0.025)))
    if kind == 'spike':
        radius = rng.uniform(0.015, 0.03)
        return Spike(base=tuple(float(v) for v in point - normal * radius), tip=_inside_box(point + normal * rng.uniform(0.08, 0.16), 0.01),
            radius=float(radius))
    if kind == 'floater':
        radii = rng.uniform(0.015, 0.045, 3)
        centre = _inside_box(point + normal * (rng.uniform(0.04, 0.1) + radii.max()), radii.max() + 0.01)
        return Floater(centre=centre, radii=tuple(float(v) for v in radii))
    if kind == 'sharp_nose':
        s, o = head.scale, np.array(head.origin)
        base = o + s * np.array([0.0, head.nose_tip_y, 0.27 + head.nose_length])
        root = o + s * np.array([0.0, head.nose_root_y, 0.27])
        axis = (base - root) / np.linalg.norm(base - root) + np.array([0, rng.uniform(0.0, 0.6), 0])
        axis /= np.linalg.norm(axis)
        return SharpNose(base=tuple(float(v) for v in base), tip=_inside_box(base + axis * rng.uniform(0.08, 0.14), 0.01),
            radius=float(0.9 * s * head.nose_tip_r))
    raise ValueError(f'unknown defect kind {kind!r}')

#----------------------------------------------------------------------------
