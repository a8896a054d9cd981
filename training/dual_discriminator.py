"""EG3D's dual discriminator: scores the super-resolved image together with the upsampled raw neural rendering."""

import torch

from torch_utils import persistence
from torch_utils.ops import upfirdn2d
from training.networks_stylegan2 import Discriminator

#----------------------------------------------------------------------------

def filtered_resizing(image_orig_tensor, size, f, filter_mode='antialiased'):
    """Resize [N, C, H, W] images to size x size.

    filter_mode: 'antialiased' (bilinear with antialiasing, what EG3D uses), 'classic' (upfirdn2d up 2x with `f`,
    bilinear to 2*size+2, filtered 2x down), 'none' (plain bilinear) or a float t in (0, 1) blending plain (1-t)
    and antialiased (t) bilinear.
    """
    def bilinear(x, out_size, antialias):
        return torch.nn.functional.interpolate(x, size=(out_size, out_size), mode='bilinear', align_corners=False, antialias=antialias)

    if filter_mode == 'antialiased':
        return bilinear(image_orig_tensor, size, antialias=True)
    if filter_mode == 'classic':
        x = upfirdn2d.upsample2d(image_orig_tensor, f, up=2)
        x = bilinear(x, size * 2 + 2, antialias=False)
        return upfirdn2d.downsample2d(x, f, down=2, flip_filter=True, padding=-1)
    if filter_mode == 'none':
        return bilinear(image_orig_tensor, size, antialias=False)
    assert isinstance(filter_mode, float) and 0 < filter_mode < 1
    filtered = bilinear(image_orig_tensor, size, antialias=True)
    aliased = bilinear(image_orig_tensor, size, antialias=False)
    return (1 - filter_mode) * aliased + filter_mode * filtered

#----------------------------------------------------------------------------

@persistence.persistent_class
class DualDiscriminator(Discriminator):
    def __init__(self,
        c_dim,                          # Conditioning label (C) dimensionality (camera parameters, 25).
        img_resolution,                 # Resolution of the final image.
        img_channels,                   # Channels of ONE image; the network reads image and raw image stacked.
        architecture        = 'resnet', # Architecture: 'orig', 'skip', 'resnet'.
        channel_base        = 32768,    # Channels at resolution r: min(channel_base // r, channel_max).
        channel_max         = 512,      # Maximum number of channels in any layer.
        num_fp16_res        = 4,        # Use fp16 for the N highest resolutions (on CUDA only).
        conv_clamp          = 256,      # Clamp conv outputs to +-X, None = no clamping.
        cmap_dim            = None,     # Size of the mapped label, None = channels at resolution 4.
        disc_c_noise        = 0,        # Std of the noise added to c (times its batch std) before conditioning.
        block_kwargs        = {},       # Arguments for DiscriminatorBlock.
        mapping_kwargs      = {},       # Arguments for MappingNetwork.
        epilogue_kwargs     = {},       # Arguments for DiscriminatorEpilogue.
    ):
        super().__init__(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels * 2,
            architecture=architecture, channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res,
            conv_clamp=conv_clamp, cmap_dim=cmap_dim, block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs,
            epilogue_kwargs=epilogue_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1,3,3,1]))
        self.disc_c_noise = disc_c_noise

    def forward(self, img, c, update_emas=False, **block_kwargs):
        """Logits [N, 1] for img = {'image': [N, C, R, R], 'image_raw': [N, C, r, r]} and camera labels c."""
        image_raw = filtered_resizing(img['image_raw'], size=img['image'].shape[-1], f=self.resample_filter)
        if self.disc_c_noise > 0: # EG3D adds this in place, into the caller's c; we leave the caller's tensor alone.
            c = c + torch.randn_like(c) * c.std(0) * self.disc_c_noise
        return super().forward(torch.cat([img['image'], image_raw], 1), c, update_emas=update_emas, **block_kwargs)

#----------------------------------------------------------------------------

@persistence.persistent_class
class SingleDiscriminator(Discriminator):
    def __init__(self,
        c_dim,                          # Conditioning label (C) dimensionality.
        img_resolution,                 # Input resolution.
        img_channels,                   # Number of input channels.
        architecture        = 'resnet', # Architecture: 'orig', 'skip', 'resnet'.
        channel_base        = 32768,    # Channels at resolution r: min(channel_base // r, channel_max).
        channel_max         = 512,      # Maximum number of channels in any layer.
        num_fp16_res        = 4,        # Use fp16 for the N highest resolutions (on CUDA only).
        conv_clamp          = 256,      # Clamp conv outputs to +-X, None = no clamping.
        cmap_dim            = None,     # Size of the mapped label, None = channels at resolution 4.
        sr_upsample_factor  = 1,        # Ignored (accepted for config compatibility).
        block_kwargs        = {},       # Arguments for DiscriminatorBlock.
        mapping_kwargs      = {},       # Arguments for MappingNetwork.
        epilogue_kwargs     = {},       # Arguments for DiscriminatorEpilogue.
    ):
        _ = sr_upsample_factor
        super().__init__(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
            architecture=architecture, channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res,
            conv_clamp=conv_clamp, cmap_dim=cmap_dim, block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs,
            epilogue_kwargs=epilogue_kwargs)

    def forward(self, img, c, update_emas=False, **block_kwargs):
        """Score img['image'] alone (the raw rendering, if present, is ignored)."""
        return super().forward(img['image'], c, update_emas=update_emas, **block_kwargs)

#----------------------------------------------------------------------------
