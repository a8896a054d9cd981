"""The EG3D adapter: a TriPlaneGenerator (ours or an official pickle's) behind the generator interface."""

import copy
import math

import numpy as np
import torch

from dnnlib.util import open_regular
from eg3d_rlhf.generators.base import Generator3D
from eg3d_rlhf.geometry.sigma import SigmaField
from torch_utils import misc
from torch_utils.ops import triplane_sigma
from training import legacy
from training.camera_utils import orbit_camera_label
from training.triplane import synthesize_planes
from training.volumetric_rendering.renderer import ImportanceRenderer

#----------------------------------------------------------------------------
# One recipe per seed, used by banks, the panel, evaluate, extract_sigma and shape_report alike: gen_samples' z
# for the seed, its frontal conditioning camera, truncation 0.7 at cutoff 14, constant noise, and torch seeded
# with the seed before an image is rendered (the renderer draws stratified ray samples).

def seed_latents(seeds, z_dim):
    """gen_samples' z [len(seeds), z_dim]: float64 normal draws per seed, used as float32."""
    return torch.from_numpy(np.stack([np.random.RandomState(int(s)).randn(z_dim) for s in seeds])).to(torch.float32)


class TriPlaneField(SigmaField):
    """Tri-planes of a batch of latents, synthesised once, and the raw sigma the decoder gives at any points."""

    def __init__(self,
        G,                          # TriPlaneGenerator (this project's or one from an EG3D pickle).
        ws,                         # Intermediate latents [batch, num_ws, w_dim].
        noise_mode      = 'const',  # Backbone noise: 'const', 'random' or 'none'.
        requires_grad   = False,    # Keep the planes' autograd graph so sigma can be differentiated?
        planes          = None,     # Tri-planes G already drew for ws ([batch, 3, 32, H, W] or [batch, 96, H, W], as
                                    # synthesis(cache_backbone=True) keeps them), used as they are; None = drawn here.
    ):
        self.G = G
        self.device = next(G.parameters()).device
        self.requires_grad = requires_grad
        misc.assert_shape(ws, [None, None, G.w_dim])
        self.ws = ws.to(self.device)
        if planes is not None:
            self.planes = planes.view(len(planes), 3, 32, *planes.shape[-2:])
            misc.assert_shape(self.planes, [len(self.ws), 3, 32, None, None])
        else:
            with torch.set_grad_enabled(requires_grad):
                self.planes = synthesize_planes(G, self.ws, noise_mode=noise_mode) # One backbone pass.
        self.batch_size = self.planes.shape[0]
        self._planes_cl = (None, None)                                          # (planes, the fused op's copy of them).

    @classmethod
    def from_latents(cls, G, z, c, truncation_psi=1, truncation_cutoff=None, noise_mode='const', requires_grad=False):
        """Map z (conditioned on camera c) to ws, then build the field."""
        device = next(G.parameters()).device
        with torch.set_grad_enabled(requires_grad):
            ws = G.mapping(z.to(device, torch.float32), c.to(device, torch.float32),
                truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return cls(G, ws, noise_mode=noise_mode, requires_grad=requires_grad)

    def decode(self, coords):
        # The decoder ignores view directions, so zeros stand in for them.
        dirs = torch.zeros_like(coords)
        renderer = self.G.renderer
        if not isinstance(renderer, ImportanceRenderer):                        # A pickle's own renderer class.
            return renderer.run_model(self.planes, self.G.decoder, coords, dirs, self.G.rendering_kwargs)['sigma']
        if self._planes_cl[0] is not self.planes and triplane_sigma.can_run(self.planes):
            self._planes_cl = (self.planes, triplane_sigma.channels_last(self.planes))  # Once per planes tensor.
        planes_cl = self._planes_cl[1] if self._planes_cl[0] is self.planes else None
        return renderer.run_model(self.planes, self.G.decoder, coords, dirs, self.G.rendering_kwargs,
            planes_cl=planes_cl, sigma_only=True)['sigma']

#----------------------------------------------------------------------------
# The EG3D family's files (generators/registry.py): network pickles, whose loading runs code stored in them.

PICKLE_PROTOCOLS = (2, 3, 4, 5)     # pickle.dump's protocols since Python 2.3; EG3D's and our snapshots use them.


def is_network_pickle(path):
    """Does the file start like a pickle of protocol 2 or later? Reads 2 bytes and runs nothing: only loading it
    (training.legacy.load_network_pkl) runs code, and says whether it is really a network pickle."""
    with open_regular(path, 'rb') as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and head[1] in PICKLE_PROTOCOLS

#----------------------------------------------------------------------------

class EG3DGenerator(Generator3D):
    kind = 'eg3d'

    def __init__(self,
        G,                          # TriPlaneGenerator (this project's or one unpickled from EG3D's source).
        path                = None, # The pickle it came from (its identity in bank metadata), None = in memory.
        truncation_psi      = 0.7,  # Truncation of seeds' samples (gen_samples' default).
        truncation_cutoff   = 14,   # Truncation cutoff of seeds' samples.
        fov_degrees         = 18.837, # Field of view of the frontal conditioning camera.
        batch               = 8,    # Seeds per generator pass.
    ):
        self.G, self.path = G, path
        self.truncation_psi, self.truncation_cutoff = float(truncation_psi), truncation_cutoff
        self.fov_degrees, self.batch = float(fov_degrees), int(batch)
        self.cube_length = float(G.rendering_kwargs['box_warp'])
        self._camera = None                                     # Made on first use (LookAtPoseSampler draws noise).

    @classmethod
    def load(cls, path, device='cpu', trust=False, **kwargs):
        """G_ema of a network pickle in eval mode on `device`; loading runs code stored in the pickle (trust). A
        dnnlib.util.FrozenFile loads the bytes it holds (those a caller checked), not the file now at its path."""
        with open_regular(path, 'rb') as f:
            G = legacy.load_network_pkl(f, trust=trust)['G_ema']
        return cls(G.to(device).eval().requires_grad_(False), path=str(path), **kwargs)

    @property
    def device(self):
        return next(self.G.parameters()).device

    def camera(self, n=1):
        """gen_samples' frontal conditioning camera label [n, 25], made once per adapter: EG3D's pose sampler draws
        (zero-scaled) noise from torch's generator, so making it once keeps training runs' random streams as before."""
        if self._camera is None:
            self._camera = orbit_camera_label(self.G.rendering_kwargs, fov_degrees=self.fov_degrees, device=self.device)
        return self._camera.expand(n, -1)

    def settings(self):
        return dict(generator=self.kind, truncation_psi=self.truncation_psi, truncation_cutoff=self.truncation_cutoff,
            noise_mode='const', camera=dict(c=self.camera()[0].tolist(), yaw_deg=90.0, pitch_deg=90.0,
            fov_deg=self.fov_degrees, note="gen_samples' frontal conditioning camera"))

    def camera_views(self, seed, yaw=math.pi / 2 + 0.3, neural_res=None):
        """{image, image_raw, depth} [C, H, W] of a seed's sample seen from the orbit camera at `yaw` (default: turned
        0.3 rad to the side of the frontal one), rendered at neural_res (None: G's own), without gradients."""
        c = orbit_camera_label(self.G.rendering_kwargs, yaw=yaw, device=self.device)
        with torch.no_grad():
            out = self.G.synthesis(self.seed_ws([seed]), c, neural_rendering_resolution=neural_res, noise_mode='const')
        return dict(image=out['image'][0], image_raw=out['image_raw'][0], depth=out['image_depth'][0])

    #------------------------------------------------------------------------
    # Seeds.

    def seed_ws(self, seeds):
        """Truncated intermediate latents [len(seeds), num_ws, w_dim] of seeds, without gradients."""
        z = seed_latents(seeds, self.G.z_dim).to(self.device)
        with torch.no_grad():
            return self.G.mapping(z, self.camera(len(z)), truncation_psi=self.truncation_psi,
                truncation_cutoff=self.truncation_cutoff)

    def field(self, seeds, condition=None, requires_grad=False):
        if condition is not None:
            raise ValueError('EG3D samples take no condition (the camera is fixed)')
        return TriPlaneField(self.G, self.seed_ws(seeds), noise_mode='const', requires_grad=requires_grad)

    def images(self, seeds, condition=None):
        out, c = [], self.camera()
        with torch.no_grad():
            for seed in seeds:
                torch.manual_seed(int(seed))                    # The renderer's stratified ray samples.
                out.append(self.G.synthesis(self.seed_ws([seed]), c, noise_mode='const')['image'].clamp(-1, 1).cpu())
        images = torch.cat(out)
        misc.assert_shape(images, [len(seeds), 3, None, None])
        return images

    def reference(self):
        G = copy.deepcopy(self.G).eval().requires_grad_(False)
        return EG3DGenerator(G, path=self.path, truncation_psi=self.truncation_psi,
            truncation_cutoff=self.truncation_cutoff, fov_degrees=self.fov_degrees, batch=self.batch)

    #------------------------------------------------------------------------
    # Training latents (the GAN reward phase): random z, any camera, no truncation.

    def latent_field(self, z, c, requires_grad=False, truncation_psi=1, truncation_cutoff=None):
        """The samples of latents z [N, z_dim] conditioned on c [N, c_dim]; gradients reach G and the mapping."""
        return TriPlaneField.from_latents(self.G, z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
            requires_grad=requires_grad)

    def raw_images(self, field, camera, resolution=None):
        """The renderer's raw images [N, 3, r, r] of a latent_field() seen from cameras [N, 25] (r: G's own by default)."""
        return self.G.synthesis(field.ws, camera, noise_mode='const', neural_rendering_resolution=resolution)['image_raw']

    @property
    def neural_rendering_resolution(self):
        return self.G.neural_rendering_resolution

    def keep_truncation_centre(self):
        """Stop EG3D's running w_avg update, so truncated seeds keep their centre while G is tuned."""
        self.G.backbone.mapping.w_avg_beta = 1.0     # Each update lerps to w_avg itself (exactly); None would also stop
                                                     # truncation, which asserts that w_avg is tracked.

#----------------------------------------------------------------------------
