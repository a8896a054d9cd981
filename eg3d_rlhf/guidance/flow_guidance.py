"""Reward-guided flow sampling: a reward's gradient added to a stage's velocity at generation time, no fine-tuning."""

import math

import torch

from eg3d_rlhf.generators import registry
from eg3d_rlhf.generators.flow import VolumeField, blur
from torch_utils import misc

#----------------------------------------------------------------------------
# At time t a stage's sample x_t has the clean estimate x1_hat = x_t + (1 - t) v(x_t, t) (the linear path flow
# matching trains on). Guidance decodes x1_hat to sigma, scores the reward's slab of it and moves the velocity along
# the reward's ascent:
#   'gradient'  classifier guidance: v + s * g, g = d r / d x_t through the velocity model (one backward pass of it
#               per velocity call);
#   'cfg'       PSD's view, guidance as a conditional direction: the preferred velocity v+ is the one whose clean
#               estimate moved up the reward by a step g1 = d r / d x1_hat, v+ = v + g1 / (1 - t), and the guided
#               velocity mixes them as classifier-free guidance does, v + s (v+ - v). The velocity model is not
#               differentiated, so it costs a decode and a reward pass.
# g is per-sample normalised to unit RMS (normalize='rms'; 'none' keeps the raw gradient) and may be clipped to RMS
# max_rms, so the scale means the same across rewards. Guidance acts while t_start <= t < t_end. A stage can be
# guided only when its decode is differentiable: the bundled model's structure stage hands off a threshold, so it is
# the detail stage (the last, index -1) that is guided.

MODES = ('cfg', 'gradient')
NORMS = ('rms', 'none')


def slab_scorer(reward, cube_length, empty_sigma=-10.0):
    """score(sigma [N, R, R, R]) -> rewards [N] of volumes through the reward's contract, differentiable: the reward's
    slab read from the volume (flow.VolumeField), as every tool scores a flow sample."""
    def score(sigma):
        field = VolumeField(sigma, cube_length, empty_sigma, requires_grad=True)
        slab = field.sample_grid(reward.grid)
        misc.assert_shape(slab, [len(sigma), *reward.grid.shape])
        return reward.score(slab)
    return score


class RewardGuidance:
    def __init__(self,
        score,                      # score(sigma [N, R, R, R]) -> rewards [N], differentiable (slab_scorer()).
        scale       = 1.0,          # Guidance scale s; 0 leaves the velocity exactly as it is.
        mode        = 'cfg',        # 'cfg' (PSD-style mixing) or 'gradient' (classifier guidance), see above.
        stage       = -1,           # Index of the guided stage; its decode must be differentiable.
        t_start     = 0.0,          # Guidance acts while t_start <= t < t_end.
        t_end       = 1.0,
        normalize   = 'rms',        # 'rms': g scaled to unit RMS per sample; 'none': the raw gradient.
        max_rms     = None,         # With normalize='none': clip g to this RMS per sample (None = no clip).
        smooth      = 0.0,          # Gaussian blur of g over a volume stage's voxels (std in voxels; 0 = none).
    ):
        for name, value in dict(scale=scale, t_start=t_start, t_end=t_end).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f'{name} must be a finite number, got {value!r}')
        if mode not in MODES:
            raise ValueError(f'unknown guidance mode {mode!r}; use one of {", ".join(MODES)}')
        if normalize not in NORMS:
            raise ValueError(f'unknown normalisation {normalize!r}; use one of {", ".join(NORMS)}')
        if not 0 <= t_start < t_end <= 1:
            raise ValueError(f'guidance needs 0 <= t_start < t_end <= 1, got {t_start}, {t_end}')
        if max_rms is not None and not (math.isfinite(max_rms) and max_rms > 0):
            raise ValueError(f'max_rms must be a positive number or None, got {max_rms!r}')
        if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not 0 <= smooth < float('inf'):
            raise ValueError(f'smooth must be a finite number >= 0, got {smooth!r}')
        self.score, self.scale, self.mode, self.stage = score, float(scale), mode, int(stage)
        self.index = self.stage if self.stage >= 0 else None        # Resolved by for_stages() when negative.
        self.t_start, self.t_end, self.normalize, self.max_rms = float(t_start), float(t_end), normalize, max_rms
        self.smooth = float(smooth)

    def describe(self):
        return (f'{self.mode} guidance, scale {self.scale:g}, stage {self.stage}, t in [{self.t_start:g}, {self.t_end:g}), '
            f'{self.normalize} normalisation' + (f', max RMS {self.max_rms:g}' if self.max_rms else '') +
            (f', smoothed over {self.smooth:g} voxels' if self.smooth else ''))

    def for_stages(self, count):
        """Check the guided stage against a pipeline of `count` stages (and resolve a negative index); returns self."""
        if not -count <= self.stage < count:
            raise ValueError(f'stage {self.stage} does not exist in a pipeline of {count} stages')
        self.index = self.stage % count
        return self

    def __call__(self, index, stage):
        """pipeline.sample's guide: the guided velocity of the chosen stage, None for the others."""
        return self.velocity(stage) if self.scale != 0 and index == self.index else None

    def velocity(self, stage):
        """v(x, t, cond, context) of `stage` with the guidance term added where it acts."""
        def guided(x, t, cond, context):
            v = stage.velocity(x, t, cond, context)
            if not self.acts(t):
                return v
            return v + self.scale * self.term(stage, x, t, cond, context, v)
        return guided

    def acts(self, t):
        t = float(t.reshape(-1)[0]) if torch.is_tensor(t) else float(t)
        return self.t_start <= t < self.t_end

    def term(self, stage, x, t, cond, context, v):
        """The guidance direction at x_t (before the scale): g (gradient) or v+ - v (cfg), normalised as configured."""
        tt = t.view(-1, *[1] * (x.ndim - 1)) if torch.is_tensor(t) else t
        with torch.enable_grad():
            if self.mode == 'gradient':
                x_in = x.detach().requires_grad_(True)
                x1_hat = x_in + (1 - tt) * stage.velocity(x_in, t, cond, context)
            else:
                x_in = (x + (1 - tt) * v).detach().requires_grad_(True)
                x1_hat = x_in
            r = self.score(stage.decode(x1_hat, context))
            g, = torch.autograd.grad(r.sum(), x_in)
        g = self.normalised(blur(g, self.smooth) if self.smooth else g)
        return g if self.mode == 'gradient' else g / (1 - tt)

    def normalised(self, g):
        rms = g.flatten(1).square().mean(dim=1).sqrt().view(-1, *[1] * (g.ndim - 1))
        if self.normalize == 'rms':
            return g / rms.clamp_min(1e-12)
        if self.max_rms is not None:
            return g * (self.max_rms / rms.clamp_min(1e-12)).clamp(max=1)
        return g

#----------------------------------------------------------------------------

def guided_generator(generator, guidance):
    """A copy of a FlowGenerator that draws every sample with `guidance` (a RewardGuidance); scale 0 draws exactly the
    unguided samples. Every tool that takes a generator (evaluate's comparison, banks, rewards) can use it."""
    if not registry.has(generator, 'guidance'):
        names = ' or '.join(f.title for f in registry.with_capability('guidance'))
        raise ValueError(f'reward-guided sampling needs a {names} generator, got {type(generator).__name__}')
    return generator.with_guide(guidance.for_stages(len(generator.pipeline.stages)), guidance.describe())
