"""EG3D's super-resolution heads: two StyleGAN2 blocks that lift the neural rendering (RGB + features) to the output size."""

import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import upfirdn2d
from training.networks_stylegan2 import SynthesisBlock

#----------------------------------------------------------------------------

@persistence.persistent_class
class SynthesisBlockNoUp(SynthesisBlock):
    """SynthesisBlock whose first conv keeps the input resolution (and whose running image is not upsampled)."""
    conv0_up = 1

#----------------------------------------------------------------------------

class _SuperresolutionBase(torch.nn.Module):
    """Shared forward: resize the inputs to `input_resolution`, then run block0 and block1 on the last w.

    Subclasses build `block0`, `block1` and set `input_resolution`, `sr_antialias`; with `resize_up_only` the inputs
    are resized only when smaller than `input_resolution`.
    """
    resize_up_only = False

    def forward(self, rgb, x, ws, **block_kwargs):
        misc.assert_shape(rgb, [None, None, x.shape[2], x.shape[3]])
        ws = ws[:, -1:, :].repeat(1, 3, 1) # every layer of both blocks uses the last w of the backbone
        size = x.shape[-1]
        if (size < self.input_resolution) if self.resize_up_only else (size != self.input_resolution):
            shape = (self.input_resolution, self.input_resolution)
            x = torch.nn.functional.interpolate(x, size=shape, mode='bilinear', align_corners=False, antialias=self.sr_antialias)
            rgb = torch.nn.functional.interpolate(rgb, size=shape, mode='bilinear', align_corners=False, antialias=self.sr_antialias)
        x, rgb = self.block0(x, rgb, ws, **block_kwargs)
        x, rgb = self.block1(x, rgb, ws, **block_kwargs)
        return rgb


def _sr_block(block_class, in_channels, out_channels, resolution, is_last, use_fp16, block_kwargs):
    """One super-resolution block: w_dim 512, RGB output, clamped at 256 exactly when fp16 is requested."""
    return block_class(in_channels, out_channels, w_dim=512, resolution=resolution, img_channels=3, is_last=is_last,
        use_fp16=use_fp16, conv_clamp=(256 if use_fp16 else None), **block_kwargs)

# The constructors below share EG3D's signature. The arguments marked "ignored" are accepted because the training
# configs pass the backbone's settings to every module; they have no effect here.

#----------------------------------------------------------------------------

@persistence.persistent_class
class SuperresolutionHybrid8XDC(_SuperresolutionBase):
    def __init__(self,
        channels,                   # Feature channels of the neural rendering.
        img_resolution,             # Output resolution (512).
        sr_num_fp16_res,            # > 0 = fp16 blocks (on CUDA) and conv clamping at 256.
        sr_antialias,               # Antialias when resizing the inputs to 128?
        num_fp16_res    = 4,        # Ignored.
        conv_clamp      = None,     # Ignored.
        channel_base    = None,     # Ignored.
        channel_max     = None,     # Ignored.
        **block_kwargs,             # Arguments for SynthesisBlock.
    ):
        super().__init__()
        assert img_resolution == 512
        use_fp16 = sr_num_fp16_res > 0
        self.input_resolution = 128
        self.sr_antialias = sr_antialias
        self.block0 = _sr_block(SynthesisBlock, channels, 256, 256, False, use_fp16, block_kwargs)
        self.block1 = _sr_block(SynthesisBlock, 256, 128, 512, True, use_fp16, block_kwargs)


@persistence.persistent_class
class SuperresolutionHybrid8X(_SuperresolutionBase):
    def __init__(self,
        channels,                   # Feature channels of the neural rendering.
        img_resolution,             # Output resolution (512).
        sr_num_fp16_res,            # > 0 = fp16 blocks (on CUDA) and conv clamping at 256.
        sr_antialias,               # Antialias when resizing the inputs to 128?
        num_fp16_res    = 4,        # Ignored.
        conv_clamp      = None,     # Ignored.
        channel_base    = None,     # Ignored.
        channel_max     = None,     # Ignored.
        **block_kwargs,             # Arguments for SynthesisBlock.
    ):
        super().__init__()
        assert img_resolution == 512
        use_fp16 = sr_num_fp16_res > 0
        self.input_resolution = 128
        self.sr_antialias = sr_antialias
        self.block0 = _sr_block(SynthesisBlock, channels, 128, 256, False, use_fp16, block_kwargs)
        self.block1 = _sr_block(SynthesisBlock, 128, 64, 512, True, use_fp16, block_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1,3,3,1]))


@persistence.persistent_class
class SuperresolutionHybrid4X(_SuperresolutionBase):
    resize_up_only = True

    def __init__(self,
        channels,                   # Feature channels of the neural rendering.
        img_resolution,             # Output resolution (256).
        sr_num_fp16_res,            # > 0 = fp16 blocks (on CUDA) and conv clamping at 256.
        sr_antialias,               # Antialias when resizing the inputs to 128?
        num_fp16_res    = 4,        # Ignored.
        conv_clamp      = None,     # Ignored.
        channel_base    = None,     # Ignored.
        channel_max     = None,     # Ignored.
        **block_kwargs,             # Arguments for SynthesisBlock.
    ):
        super().__init__()
        assert img_resolution == 256
        use_fp16 = sr_num_fp16_res > 0
        self.sr_antialias = sr_antialias
        self.input_resolution = 128
        self.block0 = _sr_block(SynthesisBlockNoUp, channels, 128, 128, False, use_fp16, block_kwargs)
        self.block1 = _sr_block(SynthesisBlock, 128, 64, 256, True, use_fp16, block_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1,3,3,1]))


@persistence.persistent_class
class SuperresolutionHybrid2X(_SuperresolutionBase):
    def __init__(self,
        channels,                   # Feature channels of the neural rendering.
        img_resolution,             # Output resolution (128).
        sr_num_fp16_res,            # > 0 = fp16 blocks (on CUDA) and conv clamping at 256.
        sr_antialias,               # Antialias when resizing the inputs to 64?
        num_fp16_res    = 4,        # Ignored.
        conv_clamp      = None,     # Ignored.
        channel_base    = None,     # Ignored.
        channel_max     = None,     # Ignored.
        **block_kwargs,             # Arguments for SynthesisBlock.
    ):
        super().__init__()
        assert img_resolution == 128
        use_fp16 = sr_num_fp16_res > 0
        self.input_resolution = 64
        self.sr_antialias = sr_antialias
        self.block0 = _sr_block(SynthesisBlockNoUp, channels, 128, 64, False, use_fp16, block_kwargs)
        self.block1 = _sr_block(SynthesisBlock, 128, 64, 128, True, use_fp16, block_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1,3,3,1]))


@persistence.persistent_class
class SuperresolutionHybridDeepfp32(_SuperresolutionBase):
    """Kept for old 256x256 checkpoints: like Hybrid4X, but resizes without antialiasing."""
    resize_up_only = True

    def __init__(self,
        channels,                   # Feature channels of the neural rendering.
        img_resolution,             # Output resolution (256).
        sr_num_fp16_res,            # > 0 = fp16 blocks (on CUDA) and conv clamping at 256.
        num_fp16_res    = 4,        # Ignored.
        conv_clamp      = None,     # Ignored.
        channel_base    = None,     # Ignored.
        channel_max     = None,     # Ignored.
        **block_kwargs,             # Arguments for SynthesisBlock.
    ):
        super().__init__()
        assert img_resolution == 256
        use_fp16 = sr_num_fp16_res > 0
        self.input_resolution = 128
        self.sr_antialias = False
        self.block0 = _sr_block(SynthesisBlockNoUp, channels, 128, 128, False, use_fp16, block_kwargs)
        self.block1 = _sr_block(SynthesisBlock, 128, 64, 256, True, use_fp16, block_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1,3,3,1]))

#----------------------------------------------------------------------------
