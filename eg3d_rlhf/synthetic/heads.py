"""A family of procedural heads: parameters drawn from a seed, their signed distance and surface albedo."""

import dataclasses

import numpy as np
import torch

from dnnlib import EasyDict
from eg3d_rlhf.synthetic import sdf_ops
from eg3d_rlhf.synthetic.layout import Layout, Vec3
from eg3d_rlhf.synthetic.sdf_ops import V

#----------------------------------------------------------------------------
# Geometry is modelled in local head units (face toward +z, y up, mirror symmetric in x, skull roughly
# 0.5 wide) and placed in the world as world = origin + scale * local, so that the head fills EG3D's
# FFHQ box [-0.5, 0.5]^3 the way FFHQ faces do (eyes slightly above the camera pivot (0, 0, 0.2), chin near
# the bottom of a frontal view). Mirrored features (eyes, ears, cheeks) are evaluated once on |x|.

@dataclasses.dataclass
class HeadParams:
    scale:          float   # World units per local unit.
    origin:         Vec3    # World position of the local origin.
    skull_radii:    Vec3    # Cranium ellipsoid half-axes.
    skull_y:        float   # Cranium centre height.
    skull_z:        float   # Cranium centre depth (negative: behind the face).
    face_width:     float   # Half-width of the mid-face mass (cheeks).
    cheekbone:      float   # Size of the cheekbone bumps.
    jaw_width:      float   # Half-width of the jaw.
    jaw_height:     float   # Half-height of the jaw.
    jaw_z:          float   # Jaw centre depth.
    chin_size:      float   # Chin radius.
    chin_z:         float   # Chin protrusion.
    brow_height:    float   # Brow ridge height.
    brow_depth:     float   # Brow ridge protrusion.
    eye_spacing:    float   # Half the distance between the eyes.
    eye_height:     float   # Eye height.
    socket_size:    float   # Eye socket scale.
    socket_depth:   float   # Depth of the eye socket centre (larger: shallower socket).
    eyeball_radius: float   # Eyeball radius.
    nose_root_y:    float   # Height of the nose bridge top.
    nose_tip_y:     float   # Height of the nose tip.
    nose_length:    float   # Protrusion of the nose tip from the face.
    nose_tip_r:     float   # Radius of the nose tip.
    nose_root_r:    float   # Radius of the nose bridge.
    nostril_width:  float   # Half-distance between the nostril wings.
    mouth_y:        float   # Height of the mouth line.
    lip_width:      float   # Half-width of the lips.
    upper_lip:      float   # Upper lip thickness.
    lower_lip:      float   # Lower lip thickness.
    lip_z:          float   # Lip protrusion.
    ear_x:          float   # Ear distance from the midline.
    ear_y:          float   # Ear height.
    ear_size:       float   # Ear scale.
    neck_radius:    float   # Neck radius.
    skin:           Vec3    # Skin albedo (RGB in [0, 1]).
    lips_rgb:       Vec3    # Lip albedo.
    iris_rgb:       Vec3    # Iris albedo.
    hair_rgb:       Vec3    # Hair and eyebrow albedo.
    hairline:       float   # Height of the hairline above the brow.


LAYOUT = Layout(HeadParams)

#----------------------------------------------------------------------------
# Random draws. Everything comes from one numpy Generator in a fixed order, so a seed fixes the head.

_SKIN_TONES = np.array([[0.96, 0.82, 0.72], [0.87, 0.67, 0.53], [0.70, 0.50, 0.36], [0.45, 0.30, 0.21]])
_IRIS = np.array([[0.36, 0.22, 0.12], [0.30, 0.46, 0.66], [0.32, 0.46, 0.30], [0.16, 0.11, 0.08]])
_HAIR = np.array([[0.09, 0.08, 0.07], [0.30, 0.20, 0.12], [0.78, 0.64, 0.42], [0.56, 0.26, 0.13], [0.62, 0.62, 0.62]])


def sample_head(rng):
    """Draw HeadParams from a numpy Generator: a varied but always well-formed head."""
    def around(mean, rel):
        return float(mean * (1 + rel * np.clip(rng.standard_normal(), -2.5, 2.5)))
    def shift(mean, std):
        return float(mean + std * np.clip(rng.standard_normal(), -2.5, 2.5))
    def colour(rgb, std):
        return tuple(float(v) for v in np.clip(rgb + std * rng.standard_normal(3), 0, 1))

    scale = around(0.88, 0.03)
    tone = rng.uniform(0, len(_SKIN_TONES) - 1)
    lo = int(min(tone, len(_SKIN_TONES) - 2))
    skin = _SKIN_TONES[lo] + (tone - lo) * (_SKIN_TONES[lo + 1] - _SKIN_TONES[lo])
    return HeadParams(
        scale=scale, origin=(0.0, shift(0.005, 0.01), shift(-0.02, 0.01)),
        skull_radii=(around(0.245, 0.04), around(0.29, 0.04), around(0.31, 0.04)),
        skull_y=shift(0.07, 0.01), skull_z=shift(-0.04, 0.01),
        face_width=around(0.185, 0.05), cheekbone=around(1.0, 0.15),
        jaw_width=around(0.15, 0.08), jaw_height=around(0.11, 0.06), jaw_z=shift(0.06, 0.012),
        chin_size=around(0.05, 0.1), chin_z=shift(0.19, 0.01),
        brow_height=shift(0.085, 0.006), brow_depth=shift(0.225, 0.008),
        eye_spacing=around(0.085, 0.05), eye_height=shift(0.03, 0.006),
        socket_size=around(1.0, 0.08), socket_depth=shift(0.275, 0.006), eyeball_radius=around(0.032, 0.05),
        nose_root_y=shift(0.045, 0.008), nose_tip_y=shift(-0.06, 0.01), nose_length=around(0.09, 0.1),
        nose_tip_r=around(0.025, 0.1), nose_root_r=around(0.016, 0.1), nostril_width=around(0.027, 0.08),
        mouth_y=shift(-0.125, 0.008), lip_width=around(0.05, 0.08), upper_lip=around(0.014, 0.12),
        lower_lip=around(0.017, 0.12), lip_z=shift(0.285, 0.006),
        ear_x=shift(0.235, 0.008), ear_y=shift(0.0, 0.012), ear_size=around(1.0, 0.08),
        neck_radius=around(0.11, 0.06),
        skin=colour(skin, 0.02), lips_rgb=colour(skin * np.array([0.85, 0.52, 0.52]), 0.03),
        iris_rgb=colour(_IRIS[rng.integers(len(_IRIS))], 0.03),
        hair_rgb=colour(_HAIR[rng.integers(len(_HAIR))], 0.03),
        hairline=shift(0.2, 0.02),
    )

class _CentreDraws:
    """Stands in for a numpy Generator and draws the centre of every distribution, so sample_head() of it is the
    average head (the region template's face)."""

    def standard_normal(self, size=None):
        return 0.0 if size is None else np.zeros(size)

    def uniform(self, low, high):
        return (low + high) / 2

    def integers(self, n):
        return 0


def mean_head():
    """The HeadParams at the centre of sample_head's distribution."""
    return sample_head(_CentreDraws())

#----------------------------------------------------------------------------
# Signed distance. `v` is LAYOUT.view of a per-point table ([P] floats, V vectors), p world points (V of [P]).

def to_local(v, p):
    """World points -> local head units."""
    return (p - v.origin) / v.scale


def local_fields(v, q):
    """Local signed distance [P] of the head at local points q, plus the feature distances albedo needs."""
    m = q.mirror()

    skull = sdf_ops.ellipsoid(q, V(0.0, v.skull_y, v.skull_z), v.skull_radii)
    face = sdf_ops.ellipsoid(q, V(0.0, -0.055, 0.09), V(v.face_width, 0.2, 0.2))
    jaw = sdf_ops.ellipsoid(q, V(0.0, -0.135 - 0.5 * v.jaw_height, v.jaw_z), V(v.jaw_width, v.jaw_height, 0.18))
    chin = sdf_ops.ellipsoid(q, V(0.0, -0.215 - 0.3 * v.jaw_height, v.chin_z), V(1.1, 0.9, 1.0) * v.chin_size)
    brow = sdf_ops.ellipsoid(q, V(0.0, v.brow_height, v.brow_depth), V(0.16, 0.03, 0.065))
    cheek = sdf_ops.ellipsoid(m, V(0.1, -0.015, 0.165), V(0.07, 0.045, 0.08) * v.cheekbone)
    neck = sdf_ops.round_cone(q, V(0.0, -0.12, -0.05), V(0.0, -0.75, -0.1), v.neck_radius, v.neck_radius * 1.1)
    d = sdf_ops.smin(skull, face, 0.06)
    d = sdf_ops.smin(d, jaw, 0.05)
    d = sdf_ops.smin(d, chin, 0.04)
    d = sdf_ops.smin(d, brow, 0.03)
    d = sdf_ops.smin(d, cheek, 0.03)
    d = sdf_ops.smin(d, neck, 0.06)

    # Eye sockets carved under the brow, eyeballs set into them.
    socket = sdf_ops.ellipsoid(m, V(v.eye_spacing, v.eye_height, v.socket_depth), V(0.048, 0.034, 0.05) * v.socket_size)
    d = sdf_ops.smax(d, -socket, 0.02)
    eye_centre = V(v.eye_spacing, v.eye_height, v.socket_depth - 0.045)
    eyes = sdf_ops.sphere(m, eye_centre, v.eyeball_radius)
    d = sdf_ops.smin(d, eyes, 0.006)

    # Nose: a round cone from the bridge to the tip, nostril wings either side of the tip.
    nose = sdf_ops.round_cone(q, V(0.0, v.nose_root_y, 0.27), V(0.0, v.nose_tip_y, 0.27 + v.nose_length), v.nose_root_r, v.nose_tip_r)
    wings = sdf_ops.sphere(m, V(v.nostril_width, v.nose_tip_y - 0.012, 0.23 + v.nose_length), 0.022)
    d = sdf_ops.smin(d, sdf_ops.smin(nose, wings, 0.015), 0.02)

    # Lips, with a thin slit between them.
    upper = sdf_ops.ellipsoid(q, V(0.0, v.mouth_y + 0.6 * v.upper_lip, v.lip_z), V(v.lip_width, v.upper_lip, 0.022))
    lower = sdf_ops.ellipsoid(q, V(0.0, v.mouth_y - 0.7 * v.lower_lip, v.lip_z - 0.004), V(0.9 * v.lip_width, v.lower_lip, 0.022))
    lips = sdf_ops.smin(upper, lower, 0.004)
    d = sdf_ops.smin(d, lips, 0.012)
    slit = sdf_ops.ellipsoid(q, V(0.0, v.mouth_y, v.lip_z + 0.02), V(0.85 * v.lip_width, 0.0025, 0.03))
    d = sdf_ops.smax(d, -slit, 0.003)

    # Ears: a flat ellipsoid with its outer face hollowed.
    ear_centre = V(v.ear_x, v.ear_y, -0.02)
    ear = sdf_ops.ellipsoid(m, ear_centre, V(0.024, 0.065, 0.042) * v.ear_size)
    bowl = sdf_ops.sphere(m, ear_centre + V(0.034, -0.005, 0.004) * v.ear_size, 0.028 * v.ear_size)
    d = sdf_ops.smin(d, sdf_ops.smax(ear, -bowl, 0.008), 0.02)
    parts = EasyDict(nose=sdf_ops.smin(nose, wings, 0.015), eyes=torch.minimum(socket, eyes), brow=brow, mouth=lips,
        chin_jaw=torch.minimum(jaw, chin), cheeks=torch.minimum(face, cheek), ears=ear, skull=skull)
    return EasyDict(sdf=d, lips=lips, eyes=eyes, eye_centre=eye_centre, mirrored=m, parts=parts)


def head_sdf(v, p):
    """World-space signed distance [P] of the heads in table view v at world points p."""
    return local_fields(v, to_local(v, p)).sdf * v.scale


def _lerp(a, b, w):
    return a + (b - a) * w


def head_albedo(v, p):
    """Surface albedo V of [P] (RGB) at world points p (meaningful on or near the surface)."""
    q = to_local(v, p)
    f = local_fields(v, q)
    m = f.mirrored

    # Hair: above a hairline that is high over the face and drops behind the ears.
    line = v.hairline - (v.hairline + 0.08) * torch.sigmoid((-0.1 - q.z) / 0.04)
    rgb = _lerp(v.skin, v.hair_rgb, torch.sigmoid((q.y - line) / 0.01))

    # Eyebrows: a band above each eye on the front of the face.
    dx = (m.x - v.eye_spacing).abs() / 0.05
    dy = (q.y - (v.brow_height - 0.005)).abs() / 0.012
    band = torch.sigmoid((1 - torch.maximum(dx, dy)) / 0.1) * torch.sigmoid((q.z - 0.2) / 0.01)
    rgb = _lerp(rgb, v.hair_rgb * 0.8, band)

    # Lips, then eyes: white, iris and pupil by the angle between the eyeball point and +z.
    rgb = _lerp(rgb, v.lips_rgb, torch.sigmoid(-(f.lips - 0.004) / 0.002))
    gaze = (m.z - f.eye_centre.z) / v.eyeball_radius
    pupil, iris, on_eye = gaze > 0.93, gaze > 0.76, f.eyes < 0.004
    pick = lambda skin, iris_c: torch.where(on_eye, torch.where(pupil, 0.05, torch.where(iris, iris_c, 0.92)), skin)
    return V(pick(rgb.x, v.iris_rgb.x), pick(rgb.y, v.iris_rgb.y), pick(rgb.z, v.iris_rgb.z))


PARTS = ('nose', 'eyes', 'brow', 'mouth', 'chin_jaw', 'cheeks', 'ears', 'skull')     # local_fields' parts, in order.


def part_labels(grid, reach=0.05):
    """(labels [X, Y, Z] int64, part names) over a CubeGrid: each point goes to the part of the average head (nose,
    eyes, brow, mouth, chin/jaw, cheeks, ears, skull) whose surface is nearest, inside a part counting as nearest, if
    that is within `reach` world units; farther points get len(names). The facial-region template of the demos."""
    params = mean_head()
    points = grid.points(0, grid.num_points).double()
    table = torch.from_numpy(LAYOUT.pack(params))[:, None].expand(-1, len(points))
    view = LAYOUT.view(table)
    parts = local_fields(view, to_local(view, V.of(points))).parts
    names = list(parts)
    assert tuple(names) == PARTS, names
    nearest, label = torch.stack([parts[n] * params.scale for n in names]).min(dim=0)
    label = torch.where(nearest <= reach, label, len(names))
    return label.reshape(grid.shape).numpy(), names


def nose_tip(params):
    """World position of the frontmost point of the nose-tip sphere: on the surface of the clean head."""
    s, o = params.scale, np.array(params.origin)
    return o + s * np.array([0.0, params.nose_tip_y, 0.27 + params.nose_length + params.nose_tip_r])

#----------------------------------------------------------------------------
