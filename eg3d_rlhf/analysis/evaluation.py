"""Per-seed measurements of a generator (slabs, images, rewards) and the statistics that compare two of them."""

import re

import numpy as np
import scipy.stats
import torch

from eg3d_rlhf.rewards.fitting import wilson_interval
from eg3d_rlhf.geometry.sigma import SigmaField, normalise_sigma_self
from torch_utils import misc
from training.camera_utils import orbit_camera_label

#----------------------------------------------------------------------------
# Seeds are rendered as sample banks are (tools/sample_bank.py): gen_samples' z for the seed, its frontal
# conditioning camera, truncation 0.7 at cutoff 14, constant noise, and torch seeded with the seed before the
# image is rendered (the renderer draws stratified ray samples). So a panel seed scored here matches its bank folder.

def seed_ranges(s):
    """'0,2,5-7' -> [0, 2, 5, 6, 7]; ValueError naming the part that cannot be read."""
    seeds = []
    for part in s.split(','):
        m = re.fullmatch(r'\s*(\d+)\s*(?:-\s*(\d+)\s*)?', part)
        if m is None:
            raise ValueError(f'cannot parse "{part}" (use numbers and ranges, e.g. 0,2,5-7)')
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f'empty range "{part}"')
        seeds.extend(range(lo, hi + 1))
    return seeds


def seed_latents(seeds, z_dim):
    """gen_samples' z [len(seeds), z_dim]: float64 normal draws per seed, used as float32."""
    return torch.from_numpy(np.stack([np.random.RandomState(int(s)).randn(z_dim) for s in seeds])).to(torch.float32)


class SeedRenderer:
    """Slabs, rewards and images of one generator for integer seeds, batched."""

    def __init__(self,
        G,                          # TriPlaneGenerator (eval mode; gradients are not needed).
        truncation_psi      = 0.7,  # Truncation of the sample banks.
        truncation_cutoff   = 14,   # Truncation cutoff of the sample banks.
        batch               = 8,    # Seeds per generator pass.
    ):
        self.G = G
        self.device = next(G.parameters()).device
        self.truncation_psi, self.truncation_cutoff, self.batch = truncation_psi, truncation_cutoff, int(batch)
        self.c = orbit_camera_label(G.rendering_kwargs, device=self.device)

    def ws(self, seeds):
        z = seed_latents(seeds, self.G.z_dim).to(self.device)
        with torch.no_grad():
            return self.G.mapping(z, self.c.expand(len(seeds), -1), truncation_psi=self.truncation_psi,
                truncation_cutoff=self.truncation_cutoff)

    def slab_batches(self, seeds, grid):
        """Raw sigma [<= batch, *grid.shape] of successive batches of the seeds, on G's device."""
        seeds = list(seeds)
        for s in range(0, len(seeds), self.batch):
            yield SigmaField(self.G, self.ws(seeds[s : s + self.batch]), noise_mode='const').sample_grid(grid)

    def slabs(self, seeds, grid):
        """Raw sigma [len(seeds), *grid.shape] on the CPU."""
        return torch.cat([sigma.cpu() for sigma in self.slab_batches(seeds, grid)])

    def rewards(self, seeds, model, grid):
        """Rewards [len(seeds)] (numpy) of a reward model trained on `grid`, its inputs normalised as in training."""
        with torch.no_grad():
            return torch.cat([model.score(normalise_sigma_self(sigma)).cpu() for sigma in self.slab_batches(seeds, grid)]).numpy()

    def images(self, seeds):
        """Images [len(seeds), 3, H, W] in [-1, 1] on the CPU, from the conditioning camera."""
        out = []
        with torch.no_grad():
            for seed in seeds:
                torch.manual_seed(int(seed))
                out.append(self.G.synthesis(self.ws([seed]), self.c, noise_mode='const')['image'].clamp(-1, 1).cpu())
        images = torch.cat(out)
        misc.assert_shape(images, [len(seeds), 3, None, None])
        return images

#----------------------------------------------------------------------------
# Statistics.

def fit_slope(x, y):
    """Least-squares line y = slope * x + intercept: dict(slope, intercept, r)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return dict(slope=float('nan'), intercept=float('nan'), r=float('nan'))
    fit = scipy.stats.linregress(x, y)
    return dict(slope=float(fit.slope), intercept=float(fit.intercept), r=float(fit.rvalue))


def reward_change(before, after):
    """How rewards moved per seed: counts, mean delta with a 95% t interval and paired-t p, and the slope of
    after on before (the paper's Figure 9: a slope well below 1 means the final reward barely depends on the start)."""
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    delta = after - before
    n = len(delta)
    sd = float(delta.std(ddof=1)) if n > 1 else 0.0
    half = float(scipy.stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float('nan')
    p = float(scipy.stats.ttest_1samp(delta, 0).pvalue) if n > 1 and sd > 0 else float('nan')
    return dict(seeds=n, rose=int((delta > 0).sum()), fell=int((delta < 0).sum()),
        mean_before=float(before.mean()), mean_after=float(after.mean()), mean_delta=float(delta.mean()),
        sd_delta=sd, mean_delta_ci95=[float(delta.mean()) - half, float(delta.mean()) + half], paired_t_p=p,
        **{f'fit_{k}': v for k, v in fit_slope(before, after).items()})


def win_rate(choices):
    """Tuned-vs-original judgements ('tuned' | 'original' | 'tie'): win fraction among decided pairs, its Wilson 95%
    interval and the two-sided exact binomial p against 50% (ties are left out of both)."""
    wins, losses = sum(c == 'tuned' for c in choices), sum(c == 'original' for c in choices)
    ties = len(choices) - wins - losses
    decided = wins + losses
    p = float(scipy.stats.binomtest(wins, decided, 0.5).pvalue) if decided else 1.0
    return dict(pairs=len(choices), wins=wins, losses=losses, ties=ties,
        win_rate=wins / decided if decided else float('nan'), wilson95=list(wilson_interval(wins, decided)), binomial_p=p)

#----------------------------------------------------------------------------
