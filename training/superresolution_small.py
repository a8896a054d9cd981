"""A narrow 32 -> 64 super-resolution head for 64x64 datasets (the CPU-sized `synthetic` preset; not an EG3D class)."""

from torch_utils import persistence
from training.superresolution import _SuperresolutionBase

#----------------------------------------------------------------------------

@persistence.persistent_class
class SuperresolutionSmall2X(_SuperresolutionBase):
    """32 -> 64: block0 keeps 32x32 (64 channels), block1 doubles to 64x64 (32 channels).

    Unlike EG3D's heads, block0 adds its RGB into a copy of the rendering, never into the caller's tensor: EG3D's
    in-place add (when no resize happens) also changes the image_raw that G returns and D compares.
    """
    img_resolution, input_resolution, block0_up, block_channels = 64, 32, False, (64, 32)

    def forward(self, rgb, x, ws, **block_kwargs):
        return super().forward(rgb.clone(), x, ws, **block_kwargs)

#----------------------------------------------------------------------------
