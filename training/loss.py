"""EG3D's GAN loss for the tri-plane generator: logistic loss, dual-image R1, density regularisation, schedules."""

import numpy as np
import torch

import dnnlib
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import upfirdn2d
from training.dual_discriminator import filtered_resizing

#----------------------------------------------------------------------------

DENSITY_REG_TYPES = ('l1', 'monotonic-detach', 'monotonic-fixed') # Values of G.rendering_kwargs['reg_type'] we implement.

# Statistic names of the reward term's parts, in 'Greward' or 'Gmain' (others are reported as Loss/G/<part>).
REWARD_STATS = {'reward_loss': 'Loss/G/reward', 'reward': 'Reward/raw', 'pushed': 'Reward/pairs_pushed',
    'lambda_r': 'Reward/lambda_r'}

def lerp_schedule(cur_nimg, start, end, fade_kimg):
    """Linear fade from `start` (at 0 images) to `end` (at fade_kimg thousand images and after); fade_kimg=0 = `end`."""
    alpha = min(cur_nimg / (fade_kimg * 1e3), 1) if fade_kimg > 0 else 1
    return (1 - alpha) * start + alpha * end


def blur(img, sigma):
    """EG3D's Gaussian-like blur: a separable base-2 exponential kernel of radius floor(3 sigma); no-op below radius 1."""
    radius = np.floor(sigma * 3)
    if radius <= 0:
        return img
    f = torch.arange(-radius, radius + 1, device=img.device).div(sigma).square().neg().exp2()
    return upfirdn2d.filter2d(img, f / f.sum())

#----------------------------------------------------------------------------

class Loss:
    """What the training loop calls: accumulate one phase's gradients for one batch (scaled by `gain`)."""
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        raise NotImplementedError()

#----------------------------------------------------------------------------

D_FAKES = ('fresh', 'reuse')        # StyleGAN2Loss(d_fakes=...): where Dmain's generated images come from.


class StyleGAN2Loss(Loss):
    """EG3D's loss. The training loop calls accumulate_gradients() once per phase and batch; 'Gboth' / 'Dboth'
    merge main and regularisation passes when lazy regularisation is off. A phase is one method below."""

    phases = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')       # Plus 'Greward' when reward_kwargs are given.

    def __init__(self,
        device,                                                 # Device the loss's own tensors live on.
        G,                                                      # TriPlaneGenerator (its rendering_kwargs configure density reg).
        D,                                                      # DualDiscriminator (or one taking {'image', 'image_raw'}).
        augment_pipe                          = None,           # Callable on [N, 2C, H, W] image+raw stacks, None = no augmentation.
        r1_gamma                              = 10,             # R1 weight (after the fade-in).
        style_mixing_prob                     = 0,              # Probability of mixing two latents' ws at a random layer.
        pl_weight                             = 0,              # Path-length weight: EG3D has none, so it must stay 0.
        pl_batch_shrink                       = 2,              # Accepted for EG3D config compatibility; unused.
        pl_decay                              = 0.01,           # Accepted for EG3D config compatibility; unused.
        pl_no_weight_grad                     = False,          # Accepted for EG3D config compatibility; unused.
        blur_init_sigma                       = 0,              # Blur sigma of D's inputs at the start of training.
        blur_fade_kimg                        = 0,              # Fade the blur out over this many kimg, 0 = no blur.
        r1_gamma_init                         = 0,              # R1 weight at the start of the fade-in.
        r1_gamma_fade_kimg                    = 0,              # Fade R1 from r1_gamma_init to r1_gamma over this many kimg, 0 = r1_gamma throughout.
        neural_rendering_resolution_initial   = 64,             # Neural rendering resolution at the start.
        neural_rendering_resolution_final     = None,           # Resolution at the end of the fade, None = keep the initial one.
        neural_rendering_resolution_fade_kimg = 0,              # Fade the resolution over this many kimg.
        gpc_reg_fade_kimg                     = 1000,           # Fade the pose-swap probability from 1 to gpc_reg_prob over this many kimg.
        gpc_reg_prob                          = None,           # Pose-swap probability, None = condition G on zeros instead of poses.
        dual_discrimination                   = False,          # R1 on the raw image too?
        filter_mode                           = 'antialiased',  # How real images are resized to the raw resolution (see filtered_resizing).
        reward_kwargs                         = None,           # Extra generator phase 'Greward', built by class name (class_name + options), None = none.
        d_fakes                               = 'fresh',        # Dmain's fakes: 'fresh' renders its own (EG3D); 'reuse' takes the step's Gmain images (see accumulate_D).
        G_ema                                 = None,           # The starting G_ema, handed to that phase as its frozen reference G_ref.
    ):
        super().__init__()
        if pl_weight != 0:
            raise ValueError('pl_weight must be 0: EG3D has no path-length regularisation (its train.py never enables it)')
        if gpc_reg_prob is not None and not 0 <= gpc_reg_prob <= 1:
            raise ValueError(f'gpc_reg_prob must be None or in [0, 1], got {gpc_reg_prob}')
        rendering_kwargs = G.rendering_kwargs
        if rendering_kwargs.get('density_reg', 0) > 0 and rendering_kwargs.get('reg_type') not in DENSITY_REG_TYPES:
            raise ValueError(f'G.rendering_kwargs["reg_type"] = {rendering_kwargs.get("reg_type")!r} is not implemented; '
                f'density regularisation supports {", ".join(DENSITY_REG_TYPES)} (EG3D\'s l1-alt and total-variation do nothing there)')
        self.device = device
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        self.blur_init_sigma = blur_init_sigma
        self.blur_fade_kimg = blur_fade_kimg
        self.r1_gamma_init = r1_gamma_init
        self.r1_gamma_fade_kimg = r1_gamma_fade_kimg
        self.neural_rendering_resolution_initial = neural_rendering_resolution_initial
        self.neural_rendering_resolution_final = neural_rendering_resolution_final
        self.neural_rendering_resolution_fade_kimg = neural_rendering_resolution_fade_kimg
        self.gpc_reg_fade_kimg = gpc_reg_fade_kimg
        self.gpc_reg_prob = gpc_reg_prob
        self.dual_discrimination = dual_discrimination
        self.filter_mode = filter_mode
        if d_fakes not in D_FAKES:
            raise ValueError(f'd_fakes must be one of {", ".join(D_FAKES)}, got {d_fakes!r}')
        self.d_fakes = d_fakes
        self._fakes = []                                                # Gmain's images and cameras, for Dmain ('reuse').
        self.resample_filter = upfirdn2d.setup_filter([1,3,3,1], device=device) # For filter_mode='classic'.
        self.reward = None
        if reward_kwargs is not None:
            # An object with .loss(G, z, c, camera=..., neural_rendering_resolution=...) -> (loss, {name: detached value}).
            self.reward = dnnlib.util.construct_class_by_name(G=G, G_ref=G_ema, **reward_kwargs)
            self.phases = self.phases + ('Greward',)

    def resume_state(self):
        """What a resumed run needs to continue this loss exactly (the reward phase's running statistics)."""
        return dict(reward=self.reward.resume_state()) if hasattr(self.reward, 'resume_state') else {}

    def load_resume_state(self, state):
        if 'reward' in state and hasattr(self.reward, 'load_resume_state'):
            self.reward.load_resume_state(state['reward'])

    def schedule(self, cur_nimg):
        """Everything that depends on training progress, at `cur_nimg` images shown so far."""
        blur_sigma = max(1 - cur_nimg / (self.blur_fade_kimg * 1e3), 0) * self.blur_init_sigma if self.blur_fade_kimg > 0 else 0
        swapping_prob = None
        if self.gpc_reg_prob is not None:
            swapping_prob = lerp_schedule(cur_nimg, 1, self.gpc_reg_prob, self.gpc_reg_fade_kimg)
        resolution = self.neural_rendering_resolution_initial
        if self.neural_rendering_resolution_final is not None:
            resolution = int(np.rint(lerp_schedule(cur_nimg, resolution, self.neural_rendering_resolution_final,
                self.neural_rendering_resolution_fade_kimg)))
        r1_gamma = lerp_schedule(cur_nimg, self.r1_gamma_init, self.r1_gamma, self.r1_gamma_fade_kimg)
        return dnnlib.EasyDict(blur_sigma=blur_sigma, swapping_prob=swapping_prob, neural_rendering_resolution=resolution, r1_gamma=r1_gamma)

    #------------------------------------------------------------------------
    # Forward passes.

    def gen_conditioning(self, c, swapping_prob, per_sample=True):
        """The pose G is conditioned on: c, or the batch neighbour's pose with probability swapping_prob.

        run_G draws one coin per sample; EG3D's density regularisation draws one coin for the whole batch.
        swapping_prob=None conditions on zeros.
        """
        if swapping_prob is None:
            return torch.zeros_like(c)
        coin = torch.rand((c.shape[0], 1) if per_sample else [], device=c.device)
        return torch.where(coin < swapping_prob, torch.roll(c, 1, 0), c)

    def map_latents(self, z, c_cond, c, update_emas=False):
        """ws for z conditioned on c_cond; with style_mixing_prob, layers from a random cutoff come from a fresh z (and c)."""
        ws = self.G.mapping(z, c_cond, update_emas=update_emas)
        if self.style_mixing_prob > 0:
            cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, ws.shape[1])
            cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff, torch.full_like(cutoff, ws.shape[1]))
            ws[:, cutoff:] = self.G.mapping(torch.randn_like(z), c, update_emas=False)[:, cutoff:]
        return ws

    def draw_G(self, z, c, swapping_prob, neural_rendering_resolution, update_emas=False, keep_planes=False):
        """Render z from camera c: EasyDict(images={'image', 'image_raw', 'image_depth'}, ws, c_cond: the pose G was
        conditioned on, planes: with keep_planes the tri-planes [N, 96, H, W] with their graph, else None)."""
        c_cond = self.gen_conditioning(c, swapping_prob)
        ws = self.map_latents(z, c_cond, c, update_emas=update_emas)
        images = self.G.synthesis(ws, c, neural_rendering_resolution=neural_rendering_resolution, update_emas=update_emas,
            **(dict(cache_backbone=True) if keep_planes else {}))
        planes = None
        if keep_planes:
            planes, self.G._last_planes = self.G._last_planes, None        # Not kept on G past this step.
        return dnnlib.EasyDict(images=images, ws=ws, c_cond=c_cond, planes=planes)

    def run_G(self, z, c, swapping_prob, neural_rendering_resolution, update_emas=False):
        """Render z from camera c: ({'image', 'image_raw', 'image_depth'}, ws)."""
        drawn = self.draw_G(z, c, swapping_prob, neural_rendering_resolution, update_emas=update_emas)
        return drawn.images, drawn.ws

    def run_D(self, img, c, blur_sigma=0, update_emas=False):
        """Logits [N, 1] for img = {'image', 'image_raw'}: blur 'image' (EG3D blurs only the real raw target, once,
        in real_images), then augment the image and the upsampled raw image together."""
        img = dict(image=blur(img['image'], blur_sigma), image_raw=img['image_raw'])
        if self.augment_pipe is not None:
            size, size_raw, C = img['image'].shape[2:], img['image_raw'].shape[2:], img['image'].shape[1]
            raw_up = torch.nn.functional.interpolate(img['image_raw'], size=size, mode='bilinear', antialias=True)
            augmented = self.augment_pipe(torch.cat([img['image'], raw_up], dim=1))
            img['image'] = augmented[:, :C]
            img['image_raw'] = torch.nn.functional.interpolate(augmented[:, C:], size=size_raw, mode='bilinear', antialias=True)
        return self.D(img, c, update_emas=update_emas)

    def real_images(self, real_img, blur_sigma, neural_rendering_resolution):
        """The dual-discrimination pair for real images: the image and its (blurred) resize to the raw resolution."""
        real_img_raw = filtered_resizing(real_img, size=neural_rendering_resolution, f=self.resample_filter, filter_mode=self.filter_mode)
        return {'image': real_img, 'image_raw': blur(real_img_raw, blur_sigma)}

    #------------------------------------------------------------------------
    # Phases.

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        if phase == 'Greward' and self.reward is None:
            raise ValueError("the 'Greward' phase needs reward_kwargs")
        assert phase in self.phases, f'unknown phase {phase!r}'
        s = self.schedule(cur_nimg)
        if self.G.rendering_kwargs.get('density_reg', 0) == 0:
            phase = {'Greg': 'none', 'Gboth': 'Gmain'}.get(phase, phase)
        if s.r1_gamma == 0:
            phase = {'Dreg': 'none', 'Dboth': 'Dmain'}.get(phase, phase)
        if phase in ('Gmain', 'Gboth'):
            self.accumulate_Gmain(gen_z, gen_c, gain, s, cur_nimg)
        if phase in ('Greg', 'Gboth'):
            self.accumulate_density_reg(gen_z, gen_c, gain, s)
        if phase in ('Dmain', 'Dreg', 'Dboth'):
            self.accumulate_D(phase, real_img, real_c, gen_z, gen_c, gain, s, cur_nimg)
        if phase == 'Greward':
            self.accumulate_reward(gen_z, gen_c, gain, s, cur_nimg)

    def accumulate_Gmain(self, gen_z, gen_c, gain, s, cur_nimg=0):
        """G: maximise D's logits for generated images (non-saturating logistic loss). A reward phase with in_gan_step
        adds its loss on the same samples (their ws and tri-planes) to this one, in one backward pass."""
        with_reward = getattr(self.reward, 'in_gan_step', False)
        reuse = self.d_fakes == 'reuse'
        if reuse and self._fakes and self._fakes[0][2] != cur_nimg:
            self._fakes.clear()                                         # An earlier step's, which no Dmain took.
        drawn = self.draw_G(gen_z, gen_c, s.swapping_prob, s.neural_rendering_resolution, update_emas=reuse,
            keep_planes=with_reward)
        if reuse:
            self._fakes.append(({name: image.detach() for name, image in drawn.images.items()}, gen_c, cur_nimg))
        gen_logits = self.run_D(drawn.images, gen_c, blur_sigma=s.blur_sigma)
        training_stats.report('Loss/scores/fake', gen_logits)
        training_stats.report('Loss/signs/fake', gen_logits.sign())
        loss_Gmain = torch.nn.functional.softplus(-gen_logits)
        training_stats.report('Loss/G/loss', loss_Gmain)
        loss = loss_Gmain.mean()
        if with_reward:
            loss = loss + self.reward_loss(gen_z, drawn.c_cond, gen_c, s, cur_nimg, drawn=(drawn.ws, drawn.planes))
        loss.mul(gain).backward()

    def accumulate_density_reg(self, gen_z, gen_c, gain, s):
        """G: density regularisation, configured by G.rendering_kwargs (density_reg, reg_type, density_reg_p_dist).

        'l1': L1 between sigma at random points of [-1, 1]^3 and at points jittered by N(0, density_reg_p_dist).
        'monotonic-*': first penalise density that grows from each point to the point one voxel (box_warp / 256)
        behind it along -z (times 10; '-detach' stops the gradient through the front point), then apply the
        'l1' term with a jitter of one voxel instead of density_reg_p_dist. Each term is its own backward pass.
        """
        kwargs = self.G.rendering_kwargs
        voxel = kwargs['box_warp'] / 256 # Equals EG3D's (1/256) * box_warp bit for bit (power-of-two scaling).
        if kwargs['reg_type'] == 'l1':
            jitter = kwargs['density_reg_p_dist']
        else:
            c_cond = self.gen_conditioning(gen_c, s.swapping_prob, per_sample=False)
            ws = self.G.mapping(gen_z, c_cond, update_emas=False) # EG3D mixes no styles here.
            front = torch.rand((ws.shape[0], 2000, 3), device=ws.device) * 2 - 1
            behind = front + torch.tensor([0, 0, -voxel], device=ws.device)
            sigma_front, sigma_behind = self.sigma_pairs(ws, front, behind)
            if kwargs['reg_type'] == 'monotonic-detach':
                sigma_front = sigma_front.detach()
            monotonic_loss = torch.relu(sigma_front - sigma_behind).mean() * 10
            training_stats.report('Loss/G/monotonic', monotonic_loss)
            monotonic_loss.mul(gain).backward()
            jitter = voxel

        c_cond = self.gen_conditioning(gen_c, s.swapping_prob, per_sample=False)
        ws = self.map_latents(gen_z, c_cond, gen_c)
        initial = torch.rand((ws.shape[0], 1000, 3), device=ws.device) * 2 - 1
        perturbed = initial + torch.randn_like(initial) * jitter
        sigma_initial, sigma_perturbed = self.sigma_pairs(ws, initial, perturbed)
        tv_loss = torch.nn.functional.l1_loss(sigma_initial, sigma_perturbed) * kwargs['density_reg']
        training_stats.report('Loss/G/density_reg', tv_loss)
        tv_loss.mul(gain).backward()

    def accumulate_reward(self, gen_z, gen_c, gain, s, cur_nimg=0):
        """G: the extra phase built from reward_kwargs, for latents conditioned like run_G's and rendered from gen_c."""
        c_cond = self.gen_conditioning(gen_c, s.swapping_prob)
        self.reward_loss(gen_z, c_cond, gen_c, s, cur_nimg).mul(gain).backward()

    def reward_loss(self, gen_z, c_cond, gen_c, s, cur_nimg, drawn=None):
        """The reward object's loss for latents conditioned on c_cond and rendered from gen_c (drawn: the ws and
        tri-planes of G's GAN step, passed on when given); a reward with set_progress(cur_nimg) hears the images shown
        first (a scheduled weight). Its parts are reported by name: reward_loss and reward (Loss/G/reward, Reward/raw),
        density_consistency and image_consistency (Loss/G/...), pushed (Reward/pairs_pushed), lambda_r
        (Reward/lambda_r); any other part as Loss/G/<name>."""
        if hasattr(self.reward, 'set_progress'):
            self.reward.set_progress(cur_nimg)
        loss, parts = self.reward.loss(self.G, gen_z, c_cond, camera=gen_c, neural_rendering_resolution=s.neural_rendering_resolution,
            **({} if drawn is None else dict(drawn=drawn)))
        for name, value in parts.items():
            training_stats.report(REWARD_STATS.get(name, f'Loss/G/{name}'), value)
        return loss

    def sigma_pairs(self, ws, a, b):
        """Raw sigma of G at points a and b [N, M, 3], in one decoder pass (directions are drawn, and ignored)."""
        coords = torch.cat([a, b], dim=1)
        sigma = self.G.sample_mixed(coords, torch.randn_like(coords), ws, update_emas=False)['sigma']
        return sigma[:, :a.shape[1]], sigma[:, a.shape[1]:]

    def accumulate_D(self, phase, real_img, real_c, gen_z, gen_c, gain, s, cur_nimg=0):
        """D: minimise logits for generated images, maximise them for real ones (Dmain); R1 on real images (Dreg).
        With d_fakes='reuse' the generated images are the ones this step's Gmain rendered (from its own latents and
        cameras, by G before its update; Gmain then moved the mapping's w_avg, as Dmain's rendering does in EG3D),
        taken in the order Gmain's rounds made them; without them (no Gmain this step) Dmain renders its own."""
        loss_Dgen = 0
        if phase in ('Dmain', 'Dboth'):
            if self._fakes and self._fakes[0][2] == cur_nimg:
                gen_img, gen_c, _nimg = self._fakes.pop(0)
            else:
                self._fakes.clear()
                gen_img, _gen_ws = self.run_G(gen_z, gen_c, s.swapping_prob, s.neural_rendering_resolution, update_emas=True)
            gen_logits = self.run_D(gen_img, gen_c, blur_sigma=s.blur_sigma, update_emas=True)
            training_stats.report('Loss/scores/fake', gen_logits)
            training_stats.report('Loss/signs/fake', gen_logits.sign())
            loss_Dgen = torch.nn.functional.softplus(gen_logits)
            loss_Dgen.mean().mul(gain).backward()

        do_r1 = phase in ('Dreg', 'Dboth')
        real = self.real_images(real_img, s.blur_sigma, s.neural_rendering_resolution)
        image = real['image'].detach().requires_grad_(do_r1)
        image_raw = real['image_raw'].detach().requires_grad_(do_r1)
        real_logits = self.run_D({'image': image, 'image_raw': image_raw}, real_c, blur_sigma=s.blur_sigma)
        training_stats.report('Loss/scores/real', real_logits)
        training_stats.report('Loss/signs/real', real_logits.sign())

        loss_Dreal = 0
        if phase in ('Dmain', 'Dboth'):
            loss_Dreal = torch.nn.functional.softplus(-real_logits)
            training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal)

        loss_Dr1 = 0
        if do_r1:
            inputs = [image, image_raw] if self.dual_discrimination else [image]
            with conv2d_gradfix.no_weight_gradients():
                r1_grads = torch.autograd.grad(outputs=[real_logits.sum()], inputs=inputs, create_graph=True, only_inputs=True)
            r1_penalty = r1_grads[0].square().sum([1,2,3])
            if self.dual_discrimination:
                r1_penalty = r1_penalty + r1_grads[1].square().sum([1,2,3])
            loss_Dr1 = r1_penalty * (s.r1_gamma / 2)
            training_stats.report('Loss/r1_penalty', r1_penalty)
            training_stats.report('Loss/D/reg', loss_Dr1)
        (loss_Dreal + loss_Dr1).mean().mul(gain).backward()

#----------------------------------------------------------------------------
