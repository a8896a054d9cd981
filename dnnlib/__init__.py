"""Small utilities shared by EG3D-style code: EasyDict and the `util` helpers."""

from . import util
from .util import EasyDict, make_cache_dir_path
