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
    """Resize the neural rendering (RGB + features) to `input_resolution`, then run block0 and block1 on the last w.

    Subclasses only fill in the layout table below; all share EG3D's constructor signature. The arguments marked
    "ignored" are accepted because the training configs pass the backbone's settings to every module.
    """
    img_resolution      = None      # Output resolution the head is built for.
    input_resolution    = None      # The rendering is resized to this first.
    block0_up           = True      # Does block0 double the resolution (False = SynthesisBlockNoUp)?
    block_channels      = (128, 64) # Output channels of block0 and block1.
    resize_up_only      = False     # Resize only renderings smaller than input_resolution?
    filter_buffer       = True      # Register a `resample_filter` buffer (every head but Hybrid8XDC has one)?

    def __init__(self,
        channels,                   # Feature channels of the neural rendering.
        img_resolution,             # Output resolution; must equal the class's img_resolution.
        sr_num_fp16_res,            # > 0 = fp16 blocks (on CUDA) and conv clamping at 256.
        sr_antialias,               # Antialias when resizing the inputs to input_resolution?
        num_fp16_res    = 4,        # Ignored.
        conv_clamp      = None,     # Ignored.
        channel_base    = None,     # Ignored.
        channel_max     = None,     # Ignored.
        **block_kwargs,             # Arguments for SynthesisBlock.
    ):
        super().__init__()
        assert img_resolution == self.img_resolution, f'{type(self).__name__} outputs {self.img_resolution}x{self.img_resolution}'
        self.sr_antialias = sr_antialias
        use_fp16 = sr_num_fp16_res > 0
        common = dict(w_dim=512, img_channels=3, use_fp16=use_fp16, conv_clamp=(256 if use_fp16 else None), **block_kwargs)
        mid_res = self.input_resolution * (2 if self.block0_up else 1)
        c0, c1 = self.block_channels
        block0_class = SynthesisBlock if self.block0_up else SynthesisBlockNoUp
        self.block0 = block0_class(channels, c0, resolution=mid_res, is_last=False, **common)
        self.block1 = SynthesisBlock(c0, c1, resolution=img_resolution, is_last=True, **common)
        if self.filter_buffer:
            self.register_buffer('resample_filter', upfirdn2d.setup_filter([1,3,3,1]))

    def forward(self, rgb, x, ws, **block_kwargs):
        misc.assert_shape(rgb, [None, None, x.shape[2], x.shape[3]])
        ws = ws[:, -1:, :].repeat(1, 3, 1) # every layer of both blocks uses the last w of the backbone
        size = x.shape[-1]
        if (size < self.input_resolution) if self.resize_up_only else (size != self.input_resolution):
            shape = (self.input_resolution, self.input_resolution)
            x = torch.nn.functional.interpolate(x, size=shape, mode='bilinear', align_corners=False, antialias=self.sr_antialias)
            rgb = torch.nn.functional.interpolate(rgb, size=shape, mode='bilinear', align_corners=False, antialias=self.sr_antialias)
        elif not self.block0_up:
            # block0 will add into rgb in place (EG3D's behaviour, kept), and rgb is usually a view of x. EG3D's fp16
            # cast copies x before block0 saves it for backward; in fp32 we copy it here, or backward would fail.
            x = x.clone()
        x, rgb = self.block0(x, rgb, ws, **block_kwargs)
        x, rgb = self.block1(x, rgb, ws, **block_kwargs)
        return rgb

#----------------------------------------------------------------------------

@persistence.persistent_class
class SuperresolutionHybrid8XDC(_SuperresolutionBase):
    """128 -> 512, wider blocks; FFHQ-512 and AFHQ-512."""
    img_resolution, input_resolution, block_channels, filter_buffer = 512, 128, (256, 128), False


@persistence.persistent_class
class SuperresolutionHybrid8X(_SuperresolutionBase):
    """128 -> 512."""
    img_resolution, input_resolution = 512, 128


@persistence.persistent_class
class SuperresolutionHybrid4X(_SuperresolutionBase):
    """128 -> 256; block0 keeps 128 and larger renderings pass unresized."""
    img_resolution, input_resolution, block0_up, resize_up_only = 256, 128, False, True


@persistence.persistent_class
class SuperresolutionHybrid2X(_SuperresolutionBase):
    """64 -> 128; ShapeNet cars."""
    img_resolution, input_resolution, block0_up = 128, 64, False


@persistence.persistent_class
class SuperresolutionHybridDeepfp32(_SuperresolutionBase):
    """Kept for old 256x256 checkpoints: like Hybrid4X, but resizes without antialiasing (no sr_antialias argument)."""
    img_resolution, input_resolution, block0_up, resize_up_only = 256, 128, False, True

    def __init__(self, channels, img_resolution, sr_num_fp16_res, num_fp16_res=4, conv_clamp=None, channel_base=None,
            channel_max=None, **block_kwargs):
        super().__init__(channels, img_resolution, sr_num_fp16_res, False, **block_kwargs)

#----------------------------------------------------------------------------
