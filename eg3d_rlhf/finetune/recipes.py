"""Published runs as train.py presets: --recipe=paper is the reported FFHQ fine-tuning of "Sculpting NeRF Geometry"."""

import dataclasses

from eg3d_rlhf.finetune.config import RewardFinetuneConfig
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, shared_reward

#----------------------------------------------------------------------------
# A recipe holds train.py option values (keys are option names: EG3D's, the reward fields of config.py, the metrics');
# each one given on the command line wins over the recipe's. The values come from the paper's public code: its
# base_config.yaml, experiment/finetune_eg3d_sfield.yaml and click_legacy_args/defaults.yaml, and the loss and loop
# that read them. README.md, "The published recipe", sets them beside our defaults and says why each differs.

PAPER = dict(
    # The GAN it resumes: EG3D's FFHQ 512 generator (ffhq512-128.pkl) at its 2048 kimg, for 20 ticks of 1 kimg.
    cfg             = 'ffhq',
    gpus            = 1,
    batch           = 16,
    gamma           = 20,               # R1 weight (EG3D trained FFHQ with 1).
    glr             = 0.0025,
    dlr             = 0.002,
    gen_pose_cond   = True,
    neural_rendering_resolution_final = 128,
    resume_kimg     = 2048,
    kimg            = 2068,             # resume_kimg + 20 ticks.
    tick            = 1,
    snap            = 5,                # Its network_snapshot_ticks.
    d_fakes         = 'fresh',          # D's phase renders its own fakes (StyleGAN's loop; the demo reuses G's).
    # Its batch of 16 ran as 16 accumulated micro-batches of one sample (accum_steps 16, every phase): one sample per
    # pass here too, so minibatch-std groups hold one image and the density anchor's sum runs over one sample.
    batch_gpu       = 1,
    mbstd_group     = 1,
    # The reward phase: 10 * -clip(r, -10, 10) on samples at psi 1 (cutoff 14), every step, with a sigma-field reward:
    # the released bundle (sigma-unet) or one of ours (sigma); the --reward-model's kind decides.
    reward          = 'sigma-unet',
    lambda_r        = 10.0,
    reward_loss     = 'clip',
    reward_psi      = 1.0,
    reward_cutoff   = 14,
    reward_every    = 1,
    reward_step     = 'phase',          # A G_depth phase of its own after G's GAN step,
    reward_optimizer = 'own',           # with an Adam of its own at glr (rlhf_opt: original).
    # The density anchor: L1 to the frozen starting G_ema on a 64^3 grid over the whole box at psi 0.7 (cutoff 14),
    # summed over the batch, times 0.01.
    lambda_sigma    = 0.01,
    sigma_grid      = 64,
    sigma_psi       = 0.7,
    sigma_cutoff    = 14,
    sigma_reduce    = 'sum',
    # The per-tick reward plots: seeds 300000-300199 at psi 1 (cutoff 14); FID of 1000 samples every tick.
    panel_seeds     = '300000-300199',
    panel_psi       = 1.0,
    metrics         = ['fid1k_partial'],
    metrics_ticks   = 1,
)

RECIPES = dict(paper=PAPER)
KINDS = dict(paper=('sigma-unet', 'sigma'))             # The reward kinds a recipe tunes with.


class RecipeError(ValueError):
    """A recipe combined with an option that contradicts it (one line naming both)."""


def with_recipe(options, explicit=()):
    """train.py's options (click's parameter dict) with the --recipe's value for every option not in `explicit` (the
    names given on the command line); the options unchanged without --recipe. RecipeError for a contradiction."""
    name = options.get('recipe') or 'none'
    if name == 'none':
        return dict(options)
    recipe = RECIPES[name]
    given = options.get('cfg')
    if 'cfg' in explicit and given is not None and given != recipe['cfg']:
        raise RecipeError(f'--recipe={name} is a --cfg={recipe["cfg"]} run; --cfg={given} contradicts it (leave --cfg out)')
    given = options.get('reward')
    if 'reward' in explicit and given is not None and given not in KINDS[name]:
        raise RecipeError(f'--recipe={name} tunes with a sigma-field reward; --reward={given} contradicts it '
            f'(use {" or ".join(KINDS[name])}, or leave --reward out)')
    if options.get('reward_model') is None:
        raise RecipeError(f'--recipe={name} tunes with the published sigma-field reward: pass --reward-model (the '
            'released reward-model-7wnzkgie-sfield256.zip, or your own sigma reward checkpoint)')
    out = dict(options)
    out.update({key: value for key, value in recipe.items() if key not in explicit})
    if 'reward' not in explicit:
        out['reward'] = reward_kind(options['reward_model'], name) or recipe['reward']
    return out


def reward_kind(path, name):
    """The kind of the reward model at `path`, RecipeError when the recipe cannot tune with it; None when it cannot be
    read (train.py then reports why, naming --reward-model)."""
    try:
        kind = shared_reward(path).kind
    except (RewardCheckpointError, OSError, ValueError):
        return None
    if kind not in KINDS[name]:
        raise RecipeError(f'--recipe={name} tunes with a sigma-field reward ({" or ".join(KINDS[name])}); '
            f'--reward-model {path} is a {kind} reward')
    return kind


def reward_phase_settings(recipe):
    """The recipe's values of the settings RewardPhase takes (what one reward-phase step of it runs with: the
    benchmarks time it); the reward's kind and schedule and the panel are the run's, not the phase's."""
    skip = ('reward', 'reward_every', 'reward_optimizer', 'panel_seeds', 'panel_psi')
    return {f.name: recipe[f.name] for f in dataclasses.fields(RewardFinetuneConfig) if f.name in recipe and f.name not in skip}

#----------------------------------------------------------------------------
