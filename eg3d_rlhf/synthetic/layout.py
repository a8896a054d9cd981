"""Flat float layouts of parameter dataclasses: pack a batch into one table, read named columns back per point."""

import dataclasses
from typing import Tuple

import numpy as np

from dnnlib import EasyDict
from eg3d_rlhf.synthetic.sdf_ops import V

#----------------------------------------------------------------------------
# A parameter dataclass has only `float` and `Vec3` fields. Packing lays its fields out in declaration order
# (a float takes one column, a Vec3 three), so a batch of parameter sets is one [B, D] table. The SDF code
# gathers, per point, the row of its sample into a transposed table [D, P] and reads each field back as a
# contiguous [P] tensor (a Vec3 as sdf_ops.V of three).

Vec3 = Tuple[float, float, float]


class Layout:
    def __init__(self,
        cls,                        # Dataclass whose fields are all `float` or `Vec3`.
    ):
        self.cls = cls
        self.columns = {}
        offset = 0
        for field in dataclasses.fields(cls):
            assert field.type in (float, Vec3), f'{cls.__name__}.{field.name}: unsupported type {field.type}'
            width = 3 if field.type == Vec3 else 1
            self.columns[field.name] = slice(offset, offset + width)
            offset += width
        self.dim = offset

    def pack(self, obj):
        """The fields of `obj` as a float64 vector [dim]."""
        vec = np.zeros([self.dim], dtype=np.float64)
        for name, cols in self.columns.items():
            vec[cols] = getattr(obj, name)
        return vec

    def view(self, theta):
        """Fields of a transposed table theta [dim, P]: a float field as theta[i] [P], a Vec3 as V of three."""
        assert theta.shape[0] == self.dim
        return EasyDict({name: theta[c.start] if c.stop - c.start == 1 else V(*theta[c]) for name, c in self.columns.items()})


def from_dict(cls, values):
    """Rebuild a parameter dataclass from its dataclasses.asdict() form (lists from JSON become tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else float(v) for k, v in values.items()})

#----------------------------------------------------------------------------
