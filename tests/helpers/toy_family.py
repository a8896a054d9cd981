"""A toy generator family in one file: analytic heads (a ball with a nose whose size the seed sets) in small JSON files."""

import copy
import json
import math

import numpy as np
import torch

from dnnlib.util import atomic_write
from eg3d_rlhf.generators.base import Generator3D
from eg3d_rlhf.generators.registry import Family
from eg3d_rlhf.geometry.preview import render_surface
from eg3d_rlhf.geometry.sigma import CubeGrid, SigmaField

#----------------------------------------------------------------------------
# A sample is the union of a ball (the head, centred) and a smaller ball on its front (the nose, toward +z), as raw
# sigma: LEVEL on the surface, rising SLOPE per world unit inside, clamped to [-10, 30]. Seed s draws the head's
# radius and the nose's from numpy's RandomState(s); the file sets their means and spreads.

FORMAT = 'eg3d_rlhf.toy-balls/1'
HEADER = json.dumps(dict(format=FORMAT))[:-1].encode()      # b'{"format": "eg3d_rlhf.toy-balls/1"': how files begin.
LEVEL, SLOPE = 10.0, 400.0
KEYS = ('head', 'head_spread', 'nose', 'nose_spread')


class BallsField(SigmaField):
    def __init__(self, shapes):                 # shapes [N, 2]: head radius, nose radius.
        self.shapes, self.batch_size, self.device = shapes, len(shapes), torch.device('cpu')

    def decode(self, coords):
        head, nose = self.shapes[:, None, 0], self.shapes[:, None, 1]
        tip = torch.stack([torch.zeros_like(head), torch.zeros_like(head), head], dim=-1)     # Nose centre on the face.
        sdf = torch.minimum(coords.norm(dim=-1) - head, (coords - tip).norm(dim=-1) - nose)
        return (LEVEL - SLOPE * sdf).clamp(-10, 30).unsqueeze(-1)


class ToyBalls(Generator3D):
    kind = 'toy'

    def __init__(self,
        head        = 0.25,                 # Mean head radius (world units; the box has side 1).
        head_spread = 0.02,                 # Head radii lie in head +- head_spread.
        nose        = 0.05,                 # Mean nose radius.
        nose_spread = 0.03,                 # Nose radii lie in nose +- nose_spread.
        path        = None,                 # The file it came from.
        batch       = 8,
    ):
        self.params = {k: float(v) for k, v in zip(KEYS, (head, head_spread, nose, nose_spread))}
        self.path, self.batch = path, int(batch)

    def shape(self, seed):
        u = np.random.RandomState(int(seed)).uniform(-1, 1, size=2)
        p = self.params
        return [p['head'] + p['head_spread'] * u[0], max(0.005, p['nose'] + p['nose_spread'] * u[1])]

    def field(self, seeds, condition=None, requires_grad=False):
        if condition is not None:
            raise ValueError('toy balls take no condition')
        return BallsField(torch.tensor([self.shape(s) for s in seeds], dtype=torch.float32))

    def images(self, seeds, condition=None):
        grid = CubeGrid(32)
        volumes = self.field(seeds).sample_grid(grid).numpy()
        grey = np.stack([render_surface(v, grid, level=LEVEL, resolution=32) for v in volumes])
        return (torch.from_numpy(grey)[:, None] * 2 - 1).repeat(1, 3, 1, 1)

    def reference(self):
        return copy.copy(self)

    def settings(self):
        return dict(generator=self.kind, **self.params)

#----------------------------------------------------------------------------
# The family's file functions.

def recognise(path):
    with open(path, 'rb') as f:
        return f.read(len(HEADER)) == HEADER


def load(path, device='cpu', **options):
    with open(path, encoding='utf-8') as f:
        data = json.load(f)
    if not all(isinstance(data.get(k), (int, float)) and math.isfinite(data[k]) for k in KEYS):
        raise ValueError(f'{path}: a toy balls file needs finite numbers {", ".join(KEYS)}')
    return ToyBalls(**{k: data[k] for k in KEYS}, path=path, **options)


def save(path, generator, info=None):
    with atomic_write(path, 'w') as f:
        json.dump(dict(format=FORMAT, **generator.params, info=info or {}), f)


FAMILY = Family(name='toy', title='toy', description='a toy balls file', recognise=recognise, load=load, save=save,
    owns=lambda G: isinstance(G, ToyBalls), options=frozenset({'batch'}))

#----------------------------------------------------------------------------
