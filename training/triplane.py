"""EG3D's tri-plane generator: StyleGAN2 backbone -> three feature planes -> volume rendering -> super-resolution."""

import torch

import dnnlib
from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import triplane_sigma
from training.networks_stylegan2 import FullyConnectedLayer
from training.networks_stylegan2 import Generator as StyleGAN2Backbone
from training.volumetric_rendering.ray_sampler import RaySampler
from training.volumetric_rendering.renderer import ImportanceRenderer

#----------------------------------------------------------------------------

def synthesize_planes(G, ws, update_emas=False, **synthesis_kwargs):
    """Tri-plane features [N, 3, 32, H, W] for ws [N, num_ws, w_dim].

    Needs only `G.backbone`, so it also serves generators unpickled from EG3D's own source. Pair it with
    `G.renderer.run_model(planes, G.decoder, coords, dirs, G.rendering_kwargs)` to query many points per latent.
    """
    planes = G.backbone.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
    return planes.view(len(planes), 3, 32, planes.shape[-2], planes.shape[-1])

#----------------------------------------------------------------------------

@persistence.persistent_class
class TriPlaneGenerator(torch.nn.Module):
    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality.
        c_dim,                      # Conditioning label (C) dimensionality: 25 (cam2world 16 + intrinsics 9).
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output (super-resolved) image resolution.
        img_channels,               # Number of output color channels.
        sr_num_fp16_res     = 0,    # Number of fp16 layers in the super-resolution module.
        mapping_kwargs      = {},   # Arguments for MappingNetwork.
        rendering_kwargs    = {},   # Renderer and conditioning options (ray_start, box_warp, superresolution_module, ...).
        sr_kwargs           = {},   # Arguments for the super-resolution module.
        plane_resolution    = 256,  # Tri-plane resolution (EG3D: 256; smaller trains faster on a CPU).
        **synthesis_kwargs,         # Arguments for the backbone SynthesisNetwork.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.renderer = ImportanceRenderer()
        self.ray_sampler = RaySampler()
        self.backbone = StyleGAN2Backbone(z_dim, c_dim, w_dim, img_resolution=plane_resolution, img_channels=32*3, mapping_kwargs=mapping_kwargs, **synthesis_kwargs)
        self.superresolution = dnnlib.util.construct_class_by_name(class_name=rendering_kwargs['superresolution_module'], channels=32,
            img_resolution=img_resolution, sr_num_fp16_res=sr_num_fp16_res, sr_antialias=rendering_kwargs['sr_antialias'], **sr_kwargs)
        self.decoder = OSGDecoder(32, {'decoder_lr_mul': rendering_kwargs.get('decoder_lr_mul', 1), 'decoder_output_dim': 32})
        self.neural_rendering_resolution = 64
        self.rendering_kwargs = rendering_kwargs
        self._last_planes = None # Tri-planes kept by synthesis(cache_backbone=True).

    def mapping(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        """z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim]; the pose label is scaled by c_scale (or zeroed)."""
        if self.rendering_kwargs['c_gen_conditioning_zero']:
            c = torch.zeros_like(c)
        return self.backbone.mapping(z, c * self.rendering_kwargs.get('c_scale', 0), truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff, update_emas=update_emas)

    def synthesis(self, ws, c, neural_rendering_resolution=None, update_emas=False, cache_backbone=False, use_cached_backbone=False, **synthesis_kwargs):
        """Render ws from camera c: {'image' [N,3,R,R], 'image_raw' [N,3,r,r], 'image_depth' [N,1,r,r]}.

        neural_rendering_resolution (r), when given, also becomes the default for later calls.
        """
        misc.assert_shape(c, [None, 25])
        cam2world_matrix = c[:, :16].view(-1, 4, 4)
        intrinsics = c[:, 16:25].view(-1, 3, 3)
        if neural_rendering_resolution is None:
            neural_rendering_resolution = self.neural_rendering_resolution
        else:
            self.neural_rendering_resolution = neural_rendering_resolution
        ray_origins, ray_directions = self.ray_sampler(cam2world_matrix, intrinsics, neural_rendering_resolution)

        if use_cached_backbone and self._last_planes is not None:
            planes = self._last_planes.view(len(self._last_planes), 3, 32, *self._last_planes.shape[-2:])
        else:
            planes = synthesize_planes(self, ws, update_emas=update_emas, **synthesis_kwargs)
        if cache_backbone:
            self._last_planes = planes.flatten(1, 2) # Raw backbone layout [N, 96, H, W], as EG3D keeps it.

        # Volume-render the 32-channel feature image (channels last), then reshape to NCHW.
        feature_samples, depth_samples, _weights = self.renderer(planes, self.decoder, ray_origins, ray_directions, self.rendering_kwargs)
        N, H, W = ray_origins.shape[0], neural_rendering_resolution, neural_rendering_resolution
        feature_image = feature_samples.permute(0, 2, 1).reshape(N, feature_samples.shape[-1], H, W).contiguous()
        depth_image = depth_samples.permute(0, 2, 1).reshape(N, 1, H, W)

        # The first three feature channels are the raw RGB image; super-resolve it guided by all 32.
        rgb_image = feature_image[:, :3]
        sr_kwargs = {k: v for k, v in synthesis_kwargs.items() if k != 'noise_mode'}
        sr_image = self.superresolution(rgb_image, feature_image, ws, noise_mode=self.rendering_kwargs['superresolution_noise_mode'], **sr_kwargs)
        return {'image': sr_image, 'image_raw': rgb_image, 'image_depth': depth_image}

    def sample(self, coordinates, directions, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        """Decoder output {'rgb' [N,M,32], 'sigma' [N,M,1] raw} at points [N,M,3] for latents z (e.g. for shapes)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.sample_mixed(coordinates, directions, ws, update_emas=update_emas, **synthesis_kwargs)

    def sample_mixed(self, coordinates, directions, ws, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        """Like sample(), from ws instead of z (truncation arguments are accepted and ignored, as in EG3D)."""
        planes = synthesize_planes(self, ws, update_emas=update_emas, **synthesis_kwargs)
        return self.renderer.run_model(planes, self.decoder, coordinates, directions, self.rendering_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, neural_rendering_resolution=None, update_emas=False, cache_backbone=False, use_cached_backbone=False, **synthesis_kwargs):
        """Render latents z from cameras c: mapping() then synthesis()."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, c, update_emas=update_emas, neural_rendering_resolution=neural_rendering_resolution,
            cache_backbone=cache_backbone, use_cached_backbone=use_cached_backbone, **synthesis_kwargs)

#----------------------------------------------------------------------------
# Not a persistent class in EG3D: its pickles refer to training.triplane.OSGDecoder by name and restore the
# instance __dict__ (`hidden_dim`, submodule `net`). Keep forward to those.

class OSGDecoder(torch.nn.Module):
    def __init__(self, n_features, options):
        super().__init__()
        self.hidden_dim = 64
        self.net = torch.nn.Sequential(
            FullyConnectedLayer(n_features, self.hidden_dim, lr_multiplier=options['decoder_lr_mul']),
            torch.nn.Softplus(),
            FullyConnectedLayer(self.hidden_dim, 1 + options['decoder_output_dim'], lr_multiplier=options['decoder_lr_mul']),
        )

    def forward(self, sampled_features, ray_directions=None, sigmoid_final=True):
        """Plane features [N, 3, M, C] -> {'rgb': [N, M, out] in (-0.001, 1.001), 'sigma': [N, M, 1] raw};
        sigmoid_final=False leaves rgb raw (the paper's EG3D fork asks for that through run_model)."""
        x = sampled_features.mean(1) # Aggregate the three planes.
        N, M, C = x.shape
        return self._outputs(self.net(x.view(N * M, C)).view(N, M, -1), sigmoid_final)

    @staticmethod
    def _outputs(x, sigmoid_final=True):
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2*0.001) - 0.001 if sigmoid_final else x[..., 1:] # MipNeRF's widened sigmoid.
        return {'rgb': rgb, 'sigma': x[..., 0:1]}

    def fused(self, planes, coordinates, box_warp, sigmoid_final=True, sigma_only=False, planes_cl=None):
        """forward() of EG3D's plane samples of planes [N, 3, C, H, W] at points [N, M, 3], in one compiled op
        (torch_utils.ops.triplane_sigma); {'sigma'} alone if sigma_only; planes_cl: the planes already channels last
        (triplane_sigma.channels_last), else they are copied. None where that op cannot run here."""
        fc1, act, fc2 = self.net
        plain = (type(act) is torch.nn.Softplus and act.beta == 1 and act.threshold == 20
            and fc1.activation == fc2.activation == 'linear' and fc1.bias is not None and fc2.bias is not None)
        if not plain or not triplane_sigma.can_run(planes, coordinates):
            return None
        planes_cl = triplane_sigma.channels_last(planes) if planes_cl is None else planes_cl
        rows = 1 if sigma_only else fc2.out_features
        x = triplane_sigma.decode(planes_cl, coordinates, fc1.weight * fc1.weight_gain, fc1.bias * fc1.bias_gain,
            fc2.weight[:rows] * fc2.weight_gain, fc2.bias[:rows] * fc2.bias_gain, box_warp)
        return {'sigma': x} if sigma_only else self._outputs(x, sigmoid_final)

#----------------------------------------------------------------------------
