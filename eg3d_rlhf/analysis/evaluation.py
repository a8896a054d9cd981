"""Per-seed rewards of a generator and the statistics that compare two of them (reward change, win rate)."""

import numpy as np
import torch

from eg3d_rlhf.rewards.fitting import wilson_interval


def _stats():
    """scipy.stats, imported on first use: 1 s of every train.py and tool start otherwise (they reach this module)."""
    import scipy.stats  # pylint: disable=import-outside-toplevel
    return scipy.stats

#----------------------------------------------------------------------------
# Seeds are drawn by the generator adapter (generators/), the one recipe every tool shares, and scored through the
# reward's contract (rewards/contract.py): a panel seed scored here matches its bank folder.

def seed_rewards(generator, reward, seeds, progress=None, condition=None):
    """Rewards [len(seeds)] (numpy) of a generator's samples (of one condition), each slab sampled on the reward's
    grid and scored through its contract, `generator.batch` seeds per pass."""
    seeds, out = list(seeds), []
    with torch.no_grad():
        for s in range(0, len(seeds), generator.batch):
            sigma = generator.field(seeds[s : s + generator.batch], condition).sample_grid(reward.grid)
            out.append(reward.score(sigma).cpu())
            if progress is not None: progress(len(sigma))
    return torch.cat(out).numpy()

#----------------------------------------------------------------------------
# Statistics.

def fit_slope(x, y):
    """Least-squares line y = slope * x + intercept: dict(slope, intercept, r)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return dict(slope=float('nan'), intercept=float('nan'), r=float('nan'))
    fit = _stats().linregress(x, y)
    return dict(slope=float(fit.slope), intercept=float(fit.intercept), r=float(fit.rvalue))


def paired_change(before, after):
    """The paired change after - before: (deltas, mean, sd, 95% t interval [lo, hi], paired-t p, Cohen's d_z = mean /
    sd, the change in standard deviations of the change: 0.2 small, 0.5 medium, 0.8 large). p and d are nan where
    the deltas do not vary (or there is one), the interval where there is one."""
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    delta = after - before
    n, mean = len(delta), float(delta.mean())
    sd = float(delta.std(ddof=1)) if n > 1 else 0.0
    half = float(_stats().t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float('nan')
    p = float(_stats().ttest_1samp(delta, 0).pvalue) if n > 1 and sd > 0 else float('nan')
    return delta, mean, sd, [mean - half, mean + half], p, mean / sd if sd > 0 else float('nan')


def reward_change(before, after):
    """How rewards moved per seed: counts, mean delta with a 95% t interval, paired-t p and Cohen's d_z, and the
    slope of after on before (the paper's Figure 9: a slope well below 1 means the final reward barely depends on the
    start)."""
    delta, mean, sd, ci, p, d = paired_change(before, after)
    return dict(seeds=len(delta), rose=int((delta > 0).sum()), fell=int((delta < 0).sum()),
        mean_before=float(np.mean(before)), mean_after=float(np.mean(after)), mean_delta=mean,
        sd_delta=sd, mean_delta_ci95=ci, paired_t_p=p, cohens_d=d,
        **{f'fit_{k}': v for k, v in fit_slope(before, after).items()}, **rank_agreement(before, after))


def rank_agreement(a, b):
    """Do two score lists of the same samples rank them alike (the published study's figures 18-19: one reward over
    two generators' samples of the same seeds)? Spearman's rho with a 95% interval (Fisher z) and Kendall's tau;
    nan where fewer than 3 samples or a list does not vary."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return dict(spearman=float('nan'), spearman_ci95=[float('nan')] * 2, kendall_tau=float('nan'))
    rho = float(_stats().spearmanr(a, b).statistic)
    half = 1.96 / np.sqrt(len(a) - 3) if len(a) > 3 else float('inf')
    z = np.arctanh(np.clip(rho, -0.999999, 0.999999))
    return dict(spearman=rho, spearman_ci95=[float(np.tanh(z - half)), float(np.tanh(z + half))],
        kendall_tau=float(_stats().kendalltau(a, b).statistic))


def cohens_h(p, p0=0.5):
    """Cohen's h, the effect size of a proportion p against p0: 2 asin(sqrt(p)) - 2 asin(sqrt(p0)) (0.2 small,
    0.5 medium, 0.8 large); nan where p is nan."""
    if not np.isfinite(p):
        return float('nan')
    return float(2 * np.arcsin(np.sqrt(p)) - 2 * np.arcsin(np.sqrt(p0)))


def win_rate(choices):
    """Tuned-vs-original judgements ('tuned' | 'original' | 'tie'): win fraction among decided pairs, its Wilson 95%
    interval, the two-sided exact binomial p against 50% (ties are left out of both), Cohen's h, and the share of all
    pairs preferring tuned with ties counted half (`share`)."""
    wins, losses = sum(c == 'tuned' for c in choices), sum(c == 'original' for c in choices)
    ties = len(choices) - wins - losses
    decided = wins + losses
    p = float(_stats().binomtest(wins, decided, 0.5).pvalue) if decided else 1.0
    return dict(pairs=len(choices), wins=wins, losses=losses, ties=ties,
        win_rate=wins / decided if decided else float('nan'), wilson95=list(wilson_interval(wins, decided)), binomial_p=p,
        cohens_h=cohens_h(wins / decided if decided else float('nan')),
        share=(wins + ties / 2) / len(choices) if choices else float('nan'))

#----------------------------------------------------------------------------
