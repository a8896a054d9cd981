"""Training configurations: EG3D's ffhq / afhq / shapenet presets and the CPU-sized synthetic preset, built from train.py's options."""

import dnnlib

#----------------------------------------------------------------------------

# Super-resolution head by dataset resolution (EG3D's choice; 64 is this project's small head).
SR_MODULES = {
    512:    'training.superresolution.SuperresolutionHybrid8XDC',
    256:    'training.superresolution.SuperresolutionHybrid4X',
    128:    'training.superresolution.SuperresolutionHybrid2X',
    64:     'training.superresolution_small.SuperresolutionSmall2X',
}

# Ray sampling and camera orbit of each preset (EG3D's values for ffhq, afhq and shapenet).
RENDERING_PRESETS = {
    'ffhq': dict(
        depth_resolution            = 48,           # Uniform samples per ray.
        depth_resolution_importance = 48,           # Importance samples per ray.
        ray_start                   = 2.25,         # Near bound along each ray.
        ray_end                     = 3.3,          # Far bound along each ray.
        box_warp                    = 1,            # Side of the tri-plane box: [-0.5, 0.5]^3.
        avg_camera_radius           = 2.7,          # Orbit radius of visualisation cameras.
        avg_camera_pivot            = [0, 0, 0.2],  # Look-at point of visualisation cameras.
    ),
    'afhq': dict(depth_resolution=48, depth_resolution_importance=48, ray_start=2.25, ray_end=3.3, box_warp=1,
        avg_camera_radius=2.7, avg_camera_pivot=[0, 0, -0.06]),
    'shapenet': dict(depth_resolution=64, depth_resolution_importance=64, ray_start=0.1, ray_end=2.6, box_warp=1.6,
        white_back=True, avg_camera_radius=1.7, avg_camera_pivot=[0, 0, 0]),
    'synthetic': dict(depth_resolution=24, depth_resolution_importance=24, ray_start=2.25, ray_end=3.3, box_warp=1,
        white_back=True, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2]), # FFHQ's cameras, fewer samples, and a
        # white background like the synthetic heads' images, so G never needs a density wall to paint the background.
}

# Defaults of the train.py options documented as "[default: varies]". The synthetic preset is small enough for a
# laptop CPU: narrow networks, 32x32 neural rendering (SuperresolutionSmall2X lifts it to 64x64), no fp16 clamping.
OPTION_DEFAULTS = {
    'ffhq':      dict(cbase=32768, cmax=512, neural_rendering_resolution_initial=64, blur_fade_kimg=200, sr_num_fp16_res=4, d_num_fp16_res=4),
    'afhq':      dict(cbase=32768, cmax=512, neural_rendering_resolution_initial=64, blur_fade_kimg=200, sr_num_fp16_res=4, d_num_fp16_res=4),
    'shapenet':  dict(cbase=32768, cmax=512, neural_rendering_resolution_initial=64, blur_fade_kimg=200, sr_num_fp16_res=4, d_num_fp16_res=4),
    'synthetic': dict(cbase=4096,  cmax=128, neural_rendering_resolution_initial=32, blur_fade_kimg=20,  sr_num_fp16_res=0, d_num_fp16_res=0),
}

# The synthetic preset's tri-planes are 64x64 instead of EG3D's 256x256: on a CPU, the 96-channel backbone output
# at 256x256 costs more than the rest of a training step together.
SYNTHETIC_PLANE_RESOLUTION = 64

CONFIGS = tuple(RENDERING_PRESETS)


class ConfigError(ValueError):
    """A combination of options that cannot train; the message names the option."""

#----------------------------------------------------------------------------

def with_preset_defaults(opts):
    """opts with every unset "[default: varies]" option filled in from its --cfg preset."""
    opts = dnnlib.EasyDict(opts)
    for key, value in OPTION_DEFAULTS[opts.cfg].items():
        if opts.get(key) is None:
            opts[key] = value
    return opts


def rendering_kwargs(opts, resolution):
    """G.rendering_kwargs for the preset and options (EG3D's keys and values)."""
    sr_module = opts.sr_module or SR_MODULES.get(resolution)
    if sr_module is None:
        raise ConfigError(f'--data: no super-resolution head for {resolution}x{resolution} images '
            f'(supported: {", ".join(str(r) for r in sorted(SR_MODULES))}); pass --sr-module')
    kwargs = dnnlib.EasyDict(
        image_resolution            = resolution,
        disparity_space_sampling    = False,
        clamp_mode                  = 'softplus',
        superresolution_module      = sr_module,
        c_gen_conditioning_zero     = not opts.gen_pose_cond,   # Condition G on zeros instead of the pose?
        gpc_reg_prob                = opts.gpc_reg_prob if opts.gen_pose_cond else None,
        c_scale                     = opts.c_scale,             # Multiplier of G's pose conditioning.
        superresolution_noise_mode  = opts.sr_noise_mode,       # 'random' or 'none' per-pixel noise in the SR head.
        density_reg                 = opts.density_reg,         # Strength of density regularisation.
        density_reg_p_dist          = opts.density_reg_p_dist,  # Jitter of the perturbed points for 'l1'.
        reg_type                    = opts.reg_type,            # Density regularisation variant.
        decoder_lr_mul              = opts.decoder_lr_mul,      # Learning-rate multiplier of the decoder MLP.
        sr_antialias                = True,
    )
    kwargs.update(RENDERING_PRESETS[opts.cfg])
    return kwargs

#----------------------------------------------------------------------------

def build_config(opts, training_set_kwargs, dataset_name, desc_parts=()):
    """(config dict for training_loop, run description) from train.py's options, as EG3D's train.py builds them.

    opts: train.py's options with preset defaults filled in (with_preset_defaults). training_set_kwargs: the
    dataset's constructor kwargs with explicit resolution, use_labels and max_size. desc_parts: words the caller
    adds to the run description, before --desc (train.py's extra phases name themselves there).
    """
    if not opts.cond:
        raise ConfigError('--cond=False cannot train: EG3D renders each image from its camera label, so the generator '
            'and the dual discriminator always need the 25-float labels')
    if not training_set_kwargs.use_labels:
        raise ConfigError('--data: EG3D training needs camera labels (25 floats per image in dataset.json)')
    if opts.aug != 'noaug':
        raise ConfigError(f'--aug={opts.aug} is not implemented yet (no AugmentPipe / ADA in this release); use --aug=noaug')
    if opts.resume is not None and opts.shape_prior_steps > 0:
        raise ConfigError('--shape-prior-steps fits a new generator; it cannot be combined with --resume')
    if opts.resume is not None and not opts.trust_pickle:
        raise ConfigError(f'--resume: loading {opts.resume} runs code stored in the pickle; pass --trust-pickle if you trust this file')

    c = dnnlib.EasyDict()
    c.G_kwargs = dnnlib.EasyDict(class_name='training.triplane.TriPlaneGenerator', z_dim=512, w_dim=512, mapping_kwargs=dnnlib.EasyDict())
    c.D_kwargs = dnnlib.EasyDict(class_name='training.dual_discriminator.DualDiscriminator', block_kwargs=dnnlib.EasyDict(),
        mapping_kwargs=dnnlib.EasyDict(), epilogue_kwargs=dnnlib.EasyDict())
    c.G_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', betas=[0, 0.99], eps=1e-8)
    c.D_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', betas=[0, 0.99], eps=1e-8)
    c.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss')
    c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=(opts.device == 'cuda'), num_workers=opts.workers)
    if opts.workers > 0:
        c.data_loader_kwargs.prefetch_factor = 2
    c.training_set_kwargs = dnnlib.EasyDict(training_set_kwargs, xflip=opts.mirror, random_seed=opts.seed)

    # Hyperparameters and settings.
    c.device = opts.device
    c.num_gpus = opts.gpus
    c.batch_size = opts.batch
    c.batch_gpu = opts.batch_gpu or opts.batch // opts.gpus
    c.G_kwargs.channel_base = c.D_kwargs.channel_base = opts.cbase
    c.G_kwargs.channel_max = c.D_kwargs.channel_max = opts.cmax
    c.G_kwargs.mapping_kwargs.num_layers = opts.map_depth
    c.D_kwargs.block_kwargs.freeze_layers = opts.freezed
    c.D_kwargs.epilogue_kwargs.mbstd_group_size = opts.mbstd_group
    c.loss_kwargs.r1_gamma = opts.gamma
    c.G_opt_kwargs.lr = opts.glr
    c.D_opt_kwargs.lr = opts.dlr
    c.total_kimg = opts.kimg
    c.kimg_per_tick = opts.tick
    c.image_snapshot_ticks = c.network_snapshot_ticks = opts.snap
    c.random_seed = opts.seed

    if c.batch_size % c.num_gpus != 0:
        raise ConfigError('--batch must be a multiple of --gpus')
    if c.batch_size % (c.num_gpus * c.batch_gpu) != 0:
        raise ConfigError('--batch must be a multiple of --gpus times --batch-gpu')
    if c.batch_gpu < opts.mbstd_group:
        raise ConfigError('--batch-gpu cannot be smaller than --mbstd-group')

    # The EG3D architecture: tri-plane generator and dual discriminator.
    resolution = training_set_kwargs.resolution
    c.ema_kimg = c.batch_size * 10 / 32
    c.G_kwargs.fused_modconv_default = 'inference_only' # Regular convolutions while training, grouped ones at inference.
    c.G_kwargs.rendering_kwargs = rendering_kwargs(opts, resolution)
    c.G_kwargs.sr_kwargs = dnnlib.EasyDict(channel_base=opts.cbase, channel_max=opts.cmax, fused_modconv_default='inference_only')
    if opts.cfg == 'synthetic':
        c.G_kwargs.plane_resolution = SYNTHETIC_PLANE_RESOLUTION
    c.G_kwargs.sr_num_fp16_res = opts.sr_num_fp16_res
    c.G_kwargs.num_fp16_res = opts.g_num_fp16_res
    c.G_kwargs.conv_clamp = 256 if opts.g_num_fp16_res > 0 else None
    c.D_kwargs.num_fp16_res = opts.d_num_fp16_res
    c.D_kwargs.conv_clamp = 256 if opts.d_num_fp16_res > 0 else None
    c.D_kwargs.disc_c_noise = opts.disc_c_noise # Noise on D's pose conditioning.
    if opts.density_reg > 0:
        c.G_reg_interval = opts.density_reg_every

    c.loss_kwargs.filter_mode = 'antialiased' # How real images are resized to the raw rendering's resolution.
    c.loss_kwargs.blur_init_sigma = 10 # Blur the images D sees, fading out over blur_fade_kimg (scaled by batch / 32).
    c.loss_kwargs.blur_fade_kimg = c.batch_size * opts.blur_fade_kimg / 32
    c.loss_kwargs.gpc_reg_prob = opts.gpc_reg_prob if opts.gen_pose_cond else None
    c.loss_kwargs.gpc_reg_fade_kimg = opts.gpc_reg_fade_kimg
    c.loss_kwargs.dual_discrimination = True
    c.loss_kwargs.neural_rendering_resolution_initial = opts.neural_rendering_resolution_initial
    c.loss_kwargs.neural_rendering_resolution_final = opts.neural_rendering_resolution_final
    c.loss_kwargs.neural_rendering_resolution_fade_kimg = opts.neural_rendering_resolution_fade_kimg
    c.loss_kwargs.style_mixing_prob = opts.style_mixing_prob
    c.loss_kwargs.d_fakes = opts.d_fakes

    # Resume: no EMA ramp-up, and (unless --resume_blur) no blur and no pose-swap fade.
    if opts.resume is not None:
        c.resume_pkl = opts.resume
        c.resume_kimg = opts.resume_kimg
        c.trust_resume_pkl = True
        c.ema_rampup = None
        if not opts.resume_blur:
            c.loss_kwargs.blur_init_sigma = 0
            c.loss_kwargs.gpc_reg_fade_kimg = 0

    if opts.nobench:
        c.cudnn_benchmark = False
    bf16 = opts.cpu_bf16 if opts.device == 'cpu' else 'off'
    if bf16 == 'auto':                                  # On where the CPU has bfloat16 instructions.
        from torch_utils.ops import conv2d_gradfix # pylint: disable=import-outside-toplevel
        bf16 = 'on' if conv2d_gradfix.native_bfloat16() else 'off'
    c.cpu_bfloat16 = bf16 == 'on'

    desc = f'{opts.cfg}-{dataset_name}-gpus{c.num_gpus}-batch{c.batch_size}-gamma{c.loss_kwargs.r1_gamma:g}'
    desc = '-'.join([desc, *desc_parts, *([opts.desc] if opts.desc is not None else [])])
    return c, desc

#----------------------------------------------------------------------------
