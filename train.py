"""Train an EG3D tri-plane GAN (EG3D's train.py options; presets ffhq, afhq, shapenet and the CPU-sized synthetic),
or align a generator with another registered method (eg3d_rlhf/finetune/methods.py: Circular-DPO of a flow)."""

import click
from click.core import ParameterSource

from eg3d_rlhf import cli
from eg3d_rlhf.finetune import config_file
from eg3d_rlhf.finetune import methods
from eg3d_rlhf.finetune import options
from eg3d_rlhf.finetune import recipes
from torch_utils import report_to
from training import loss
from training import presets

#----------------------------------------------------------------------------

def parse_comma_separated_list(s):
    if isinstance(s, list):
        return s
    if s is None or s.lower() == 'none' or s == '':
        return []
    return s.split(',')


def explicit_options(ctx):
    """Names of the options given on the command line (or through the environment), not left at their defaults."""
    return {name for name in ctx.params if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}

#----------------------------------------------------------------------------

POSITIVE = cli.FiniteRange(min=0, min_open=True)

@click.command()

# Required (with --reward, --cfg to --gamma may all be left out: the bundled demo supplies them, eg3d_rlhf/synthetic/demo.py).
@click.option('--outdir',       help='Where to save the results', metavar='DIR',                  type=cli.OUT_DIR)
@click.option('--cfg',          help='Base configuration',                                      type=click.Choice(presets.CONFIGS))
@click.option('--data',         help='Training data', metavar='[ZIP|DIR]',                      type=str)
@click.option('--gpus',         help='Number of GPUs (on CPU: processes) to use', metavar='INT', type=click.IntRange(min=1))
@click.option('--batch',        help='Total batch size', metavar='INT',                         type=click.IntRange(min=1))
@click.option('--gamma',        help='R1 regularization weight', metavar='FLOAT',               type=cli.FiniteRange(min=0))

# Which generator family and method (eg3d_rlhf/finetune/methods.py), and a YAML file of options.
@click.option('--generator',    help='Generator family  [default: the --method\'s, else eg3d]', type=click.Choice(methods.families()))
@click.option('--method',       help='; '.join(f'{m.name}: {m.help}' for m in methods.METHODS.values()) + '  [default: the generator\'s first]', type=click.Choice(methods.names()))
@click.option('--config',       help='YAML file of options (the flags\' names, e.g. lambda_r: 10); flags given override it', metavar='YAML', type=str)
@click.option('--save-config',  help='Write the resolved options to this YAML file (for --config) and exit without training (--dry-run prints it)', metavar='YAML', type=cli.OUT_FILE)
@click.option('--force',        help='With --save-config: overwrite an existing file',            is_flag=True)

# Every method's config fields (eg3d_rlhf/finetune/config.py: the reward phase, needing --reward; circular_config.py:
# Circular-DPO, needing --generator=flow): each flag's default, range and help.
@options.click_options_of(*(m.config for m in methods.METHODS.values()))

# Optional features.
@click.option('--cond',         help='Train conditional model (must be True)', metavar='BOOL',  type=bool, default=True, show_default=True)
@click.option('--mirror',       help='Enable dataset x-flips', metavar='BOOL',                  type=bool, default=False, show_default=True)
@click.option('--aug',          help='Augmentation mode (only noaug is implemented)',           type=click.Choice(['noaug', 'ada', 'fixed']), default='noaug', show_default=True)
@click.option('--resume',       help='Resume from given network pickle', metavar='[PATH|URL]',  type=str)
@click.option('--resume-kimg',  help='kimg to count from when resuming  [default: the snapshot\'s own, else 0]', metavar='KIMG', type=cli.FiniteRange(min=0))
@click.option('--trust-pickle', help='Confirm you trust the --resume pickle and the --inception file: loading them runs code stored in them', is_flag=True)
@click.option('--shape-prior-steps', help='Fit the new G\'s density to synthetic heads for this many steps first (0 = off)', metavar='INT', type=click.IntRange(min=0), default=0, show_default=True)
@click.option('--freezed',      help='Freeze first layers of D', metavar='INT',                 type=click.IntRange(min=0), default=0, show_default=True)

# Misc hyperparameters.
@click.option('--batch-gpu',    help='Limit batch size per GPU', metavar='INT',                 type=click.IntRange(min=1))
@click.option('--cbase',        help='Capacity multiplier  [default: varies]', metavar='INT',   type=click.IntRange(min=1))
@click.option('--cmax',         help='Max. feature maps  [default: varies]', metavar='INT',     type=click.IntRange(min=1))
@click.option('--glr',          help='G learning rate', metavar='FLOAT',                        type=cli.FiniteRange(min=0), default=0.0025, show_default=True)
@click.option('--dlr',          help='D learning rate', metavar='FLOAT',                        type=cli.FiniteRange(min=0), default=0.002, show_default=True)
@click.option('--map-depth',    help='Mapping network depth', metavar='INT',                    type=click.IntRange(min=1), default=2, show_default=True)
@click.option('--mbstd-group',  help='Minibatch std group size', metavar='INT',                 type=click.IntRange(min=1), default=4, show_default=True)

# Misc settings.
@click.option('--desc',         help='String to include in result dir name', metavar='STR',     type=str)
@click.option('--recipe',       help='A published run\'s settings as defaults, each overridable (paper: README.md, "The published recipe")', type=click.Choice(['none', *recipes.RECIPES]), default='none', show_default=True)
@click.option('--metrics',      help='Quality metrics of G_ema (EG3D\'s names: fid50k_full, kid50k_full, fid1k_partial, ...; need --inception)', metavar='[NAME|A,B,C|none]', type=parse_comma_separated_list, default='none', show_default=True)
@click.option('--metrics-ticks', help='Compute --metrics every N ticks (and at the first and the last)  [default: 1]', metavar='INT', type=click.IntRange(min=1))
@click.option('--inception',    help='Local feature network for --metrics: NVIDIA\'s inception-2015-12-05.pkl or a torch.export / TorchScript archive (each needs --trust-pickle)', metavar='PATH', type=str)
@click.option('--kimg',         help='Total training duration', metavar='KIMG',                 type=POSITIVE, default=25000, show_default=True)
@click.option('--tick',         help='How often to print progress', metavar='KIMG',             type=POSITIVE, default=4, show_default=True)
@click.option('--snap',         help='How often to save snapshots', metavar='TICKS',            type=click.IntRange(min=1), default=50, show_default=True)
@click.option('--seed',         help='Random seed', metavar='INT',                              type=cli.SEED, default=0, show_default=True)
@click.option('--nobench',      help='Disable cuDNN benchmarking', metavar='BOOL',              type=bool, default=False, show_default=True)
@click.option('--cpu-bf16',     help='Convolutions of the training steps in bfloat16 on a CPU (auto: where it has bfloat16 instructions)', type=click.Choice(['auto', 'on', 'off']), default='auto', show_default=True)
@click.option('--report-to',    help=report_to.HELP,                                            type=click.Choice(report_to.CHOICES))
@click.option('--workers',      help='DataLoader worker processes (0 = load in the training process)', metavar='INT', type=click.IntRange(min=0), default=3, show_default=True)
@click.option('--device',       help='Where to train (auto = cuda if available)',               type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
@click.option('-n','--dry-run', help='Print training options and exit',                         is_flag=True)
@click.option('--verbose',      help='Print every option and the networks\' layer tables before training', is_flag=True)

# EG3D.
@click.option('--neural_rendering_resolution_initial', help='Resolution to render at  [default: varies]', metavar='INT', type=click.IntRange(min=1))
@click.option('--neural_rendering_resolution_final', help='Final resolution to render at, if blending', metavar='INT', type=click.IntRange(min=1))
@click.option('--neural_rendering_resolution_fade_kimg', help='Kimg to blend resolution over', metavar='INT', type=click.IntRange(min=0), default=1000, show_default=True)
@click.option('--blur_fade_kimg', help='Blur over how many kimg (at batch 32)  [default: varies]', metavar='INT', type=click.IntRange(min=1))
@click.option('--gen_pose_cond', help='If true, enable generator pose conditioning.', metavar='BOOL', type=bool, default=False, show_default=True)
@click.option('--c-scale',      help='Scale factor for generator pose conditioning.', metavar='FLOAT', type=cli.FiniteRange(min=0), default=1, show_default=True)
@click.option('--gpc_reg_prob', help='Strength of swapping regularization (with --gen_pose_cond).', metavar='FLOAT', type=cli.FiniteRange(min=0, max=1), default=0.5, show_default=True)
@click.option('--gpc_reg_fade_kimg', help='Length of swapping prob fade', metavar='INT', type=click.IntRange(min=0), default=1000, show_default=True)
@click.option('--disc_c_noise', help='Strength of discriminator pose conditioning regularization, in standard deviations.', metavar='FLOAT', type=cli.FiniteRange(min=0), default=0, show_default=True)
@click.option('--sr_noise_mode', help='Type of noise for superresolution', type=click.Choice(['random', 'none']), default='none', show_default=True)
@click.option('--resume_blur',  help='Enable to blur even on resume', metavar='BOOL', type=bool, default=False, show_default=True)
@click.option('--sr_num_fp16_res', help='Number of fp16 layers in superresolution (CUDA only)  [default: varies]', metavar='INT', type=click.IntRange(min=0))
@click.option('--g_num_fp16_res', help='Number of fp16 layers in generator (CUDA only)', metavar='INT', type=click.IntRange(min=0), default=0, show_default=True)
@click.option('--d_num_fp16_res', help='Number of fp16 layers in discriminator (CUDA only)  [default: varies]', metavar='INT', type=click.IntRange(min=0))
@click.option('--d-fakes',      help='Dmain\'s generated images: fresh renders its own (EG3D), reuse takes the ones Gmain rendered this step (one G update older; a render fewer per step)', type=click.Choice(loss.D_FAKES), default='fresh', show_default=True)
@click.option('--style_mixing_prob', help='Style-mixing regularization probability for training.', metavar='FLOAT', type=cli.FiniteRange(min=0, max=1), default=0, show_default=True)
@click.option('--sr-module',    help='Superresolution module override', metavar='STR', type=str)
@click.option('--density_reg',  help='Density regularization strength.', metavar='FLOAT', type=cli.FiniteRange(min=0), default=0.25, show_default=True)
@click.option('--density_reg_every', help='lazy density reg', metavar='INT', type=click.IntRange(min=1), default=4, show_default=True)
@click.option('--density_reg_p_dist', help='density regularization strength.', metavar='FLOAT', type=cli.FiniteRange(min=0), default=0.004, show_default=True)
@click.option('--reg_type',     help='Type of regularization', type=click.Choice(['l1', 'monotonic-detach', 'monotonic-fixed']), default='l1', show_default=True)
@click.option('--decoder_lr_mul', help='decoder learning rate multiplier.', metavar='FLOAT', type=cli.FiniteRange(min=0), default=1, show_default=True)

def main(**kwargs):
    """Train EG3D's tri-plane GAN ("Efficient Geometry-aware 3D Generative Adversarial Networks"), with --reward its
    reward fine-tuning, or run another registered method (--generator, --method).

    Examples:

    \b
    # The CPU-sized synthetic preset on synthetic heads (64x64).
    python train.py --outdir=training-runs --cfg=synthetic --data=heads64.zip \\
        --gpus=1 --batch=4 --gamma=1 --tick=0.1 --snap=10

    \b
    # FFHQ at 512x512 on 8 GPUs (EG3D's recipe), or the same as 8 torchrun processes.
    python train.py --outdir=training-runs --cfg=ffhq --data=FFHQ_512.zip \\
        --gpus=8 --batch=32 --gamma=1 --gen_pose_cond=True
    torchrun --nproc_per_node=8 train.py --outdir=training-runs --cfg=ffhq --data=FFHQ_512.zip \\
        --gpus=8 --batch=32 --gamma=1 --gen_pose_cond=True

    \b
    # Circular-DPO of the bundled two-stage flow model (the embedded demo), or of yours on a bank you labelled.
    python train.py --generator=flow --method=circular-dpo
    python train.py --generator=flow --resume=flow.pt --bank=flow-bank --labels=labels.jsonl --reward-model=r.pt \\
        --variant=all

    \b
    # One method's options alone (its --help lists only them): eg3d, circular-dpo.
    eg3d-rlhf train eg3d --reward=sigma --lambda-r=10
    eg3d-rlhf train circular-dpo --help

    \b
    # The same options from a YAML file of the flags' names (flags given win over it).
    python train.py --config run.yaml --lambda-r=5
    python train.py --reward=sigma --lambda-r=10 --save-config run.yaml

    \b
    # Fine-tune from a network pickle you trust (ours or NVIDIA's).
    python train.py --outdir=training-runs --cfg=ffhq --data=FFHQ_512.zip --gpus=8 --batch=32 --gamma=1 \\
        --gen_pose_cond=True --resume=ffhq512-128.pkl --trust-pickle --resume-kimg=25000
    """
    run(kwargs, click.get_current_context())

#----------------------------------------------------------------------------

def run(kwargs, ctx):
    """Run the method that kwargs (every option of `main`, as parsed) name; ctx tells which options were given."""
    try:
        kwargs, explicit = options.with_yaml(kwargs, explicit_options(ctx), kwargs['config'], ctx.command)
        method = methods.choose(kwargs.get('generator'), kwargs.get('method'))
        methods.check_given(method, explicit - {'save_config', 'force'}, kwargs)
        config, common = method.configure(kwargs, explicit)
        if kwargs['force'] and kwargs['save_config'] is None:
            raise options.ConfigError('--force is for --save-config: it overwrites that file')
        if kwargs['save_config'] is not None:
            values = config_file.resolved_options(method, config, common, kwargs, ctx.command, methods.METHODS.values())
            flags = config_file.flags_left_out(kwargs, explicit)         # --trust-pickle, ...: a file cannot set them.
            config_file.save(kwargs['save_config'], values, method, force=kwargs['force'], dry_run=kwargs['dry_run'],
                flags=flags)
            if not kwargs['dry_run']:
                print(f'Saved the options to {kwargs["save_config"]}; run them with: python train.py --config '
                    f'{kwargs["save_config"]}' + ''.join(' ' + flag for flag in flags))
            return
        method.run(config, common)
    except options.ConfigError as err:
        raise click.UsageError(str(err))
    except options.RunError as err:
        raise click.ClickException(str(err))

#----------------------------------------------------------------------------
# `eg3d-rlhf train COMMAND` (tools/__main__.py): train.py with one method's options alone, so its --help lists only
# them and another method's flag is an unknown option. --generator and --method stay as hidden options that take only
# this method's, so a YAML file written by --save-config reads back.

SAVING = ('config', 'save_config', 'force', 'dry_run')

def method_command(method):
    """The click command of `eg3d-rlhf train {method.command_name}` (methods.Method)."""
    names = method.options([p.name for p in main.params], methods.METHODS.values()) | set(SAVING)
    own = {f.name: options.click_param_of(f) for f in method.config.flags()}   # A shared field with its own help.
    params = [own.get(p.name, p) for p in main.params if p.name in names and p.name not in ('generator', 'method')]
    params += [click.Option([flag], hidden=True, type=click.Choice([value])) for flag, value in
        (('--generator', method.family), ('--method', method.name))]

    def callback(**given):
        kwargs = dict(main.make_context('train.py', []).params)       # The other methods' options at their defaults.
        kwargs.update(given, generator=method.family, method=method.name)
        run(kwargs, click.get_current_context())

    return click.Command(method.command_name, params=params, callback=callback, help=f"""{method.title}: {method.help}.
        Only this method's options; train.py (or eg3d-rlhf train) takes every method's.""")

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
