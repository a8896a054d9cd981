"""Proxy against gold along a run: Gao et al.'s curves of gold against distance, the fitted peak, the stop rules."""

import math

import numpy as np

#----------------------------------------------------------------------------
# Gao, Schulman and Hilton (2022) fit the gold reward's gain over the start, as a function of the distance d the policy
# has moved (d = sqrt(KL) there), by
#   rl:   gold(d) = d (alpha - beta log d)      peak at d* = exp(alpha / beta - 1), gold(d*) = beta d*
#   bon:  gold(d) = d (alpha - beta d)          peak at d* = alpha / (2 beta),      gold(d*) = alpha^2 / (4 beta)
# Both are linear in (alpha, beta), so least squares on the regressors (d, -d log d) or (d, -d^2) fits them exactly.
# Without a peak (beta <= 0) gold still rises at the last distance, and the peak is reported as none. form='best' fits
# both and keeps the one with the larger R^2 (both have two coefficients, so R^2 compares them fairly).

FORMS = ('rl', 'bon')


def regressors(d, form):
    """The two columns [len(d), 2] whose weights are (alpha, beta) in `form`; d log d is 0 at d = 0."""
    d = np.asarray(d, dtype=np.float64)
    if form == 'rl':
        return np.stack([d, -np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)], axis=1)
    if form == 'bon':
        return np.stack([d, -d * d], axis=1)
    raise ValueError(f'unknown curve form {form!r}; use one of {", ".join(FORMS)}')


def predict(d, alpha, beta, form='rl'):
    """gold(d) of the form with these coefficients."""
    return regressors(d, form) @ np.array([alpha, beta], dtype=np.float64)


def fit_gold(distance, gain, form='best'):
    """Fit gain = gold(distance) of `form` ('best': the form of FORMS with the larger R^2) by least squares:
    dict(form, alpha, beta, r2, points, peak_distance, peak_gain), the peak None when the fit has none (beta <= 0) or
    fewer than 3 points at distance > 0 were given. distance must be >= 0 and both finite."""
    if form == 'best':
        fits = [fit_gold(distance, gain, f) for f in FORMS]
        return max(fits, key=lambda f: -np.inf if f['r2'] is None else f['r2'])
    d, g = np.asarray(distance, dtype=np.float64), np.asarray(gain, dtype=np.float64)
    if d.shape != g.shape or d.ndim != 1:
        raise ValueError(f'distance and gain must be two lists of one length, not {d.shape} and {g.shape}')
    if not (np.isfinite(d).all() and np.isfinite(g).all()) or (d < 0).any():
        raise ValueError('distance and gain must be finite, and distance >= 0')
    out = dict(form=form, alpha=None, beta=None, r2=None, points=int((d > 0).sum()), peak_distance=None, peak_gain=None)
    if out['points'] < 3:
        return out
    X = regressors(d, form)
    (alpha, beta), *_ = np.linalg.lstsq(X, g, rcond=None)
    residual = g - X @ np.array([alpha, beta])
    total = ((g - g.mean()) ** 2).sum()
    out.update(alpha=float(alpha), beta=float(beta), r2=float(1 - (residual ** 2).sum() / total) if total > 0 else None)
    if beta > 1e-9 * max(abs(alpha), 1.0):                      # Rounding's beta of a straight line is no peak.
        peak = math.exp(min(alpha / beta - 1, 700)) if form == 'rl' else alpha / (2 * beta)
        if peak > 0 and math.isfinite(peak):
            out.update(peak_distance=float(peak), peak_gain=float(predict([peak], alpha, beta, form)[0]))
    return out

#----------------------------------------------------------------------------
# Stop rules, each on what a run has recorded so far (the first entry is the start):
#   gold passed its peak: the latest gold gain is below the best one by at least `noise`, and either by at least
#     `margin` of that best gain (> 0), or (given the distances, from 4 records on) the fit of the records so far puts
#     its peak before the latest distance; with `patience` p, this holds at each of the last p records;
#   disagreement grew: the members' mean sd on the panel reached `factor` times its value at the start.
# noise is a fall the panel's sampling alone could make: fall_noise(k, sd, n) = k x the standard error of the
# difference of two panel means of n samples with the start's sd, taken as independent (the same seeds make the true
# one smaller). On the flow, where the probe's noise is a third of the whole gain, the first-fall test alone fires on
# noise; k = 2 asks for a fall of two such errors.


def fall_noise(k, sd, samples):
    """k x sd x sqrt(2 / samples): k standard errors of the difference of two means of `samples` values of sd `sd`;
    0 when the count or sd is unknown (None)."""
    if not k or not samples or not sd:
        return 0.0
    return float(k) * float(sd) * math.sqrt(2.0 / int(samples))


def paired_noise(k, samples, unit=1.0):
    """noise(best, last) -> k standard errors of the mean per-sample change of the gold from tick `best` to tick
    `last`, divided by `unit`: samples [ticks][n] holds each tick's gold of the same n samples (same seeds), so the
    error is that of their paired differences: below fall_noise's two independent means while the samples move
    together, above it once they change by different amounts. None when a tick's samples are unrecorded or their
    counts differ."""
    if not k or not samples or any(s is None for s in samples) or len({len(s) for s in samples}) != 1 \
            or len(samples[0]) < 2:
        return None
    values = np.asarray(samples, dtype=np.float64)
    return lambda best, last: float(k) * float(np.std(values[last] - values[best], ddof=1)) / math.sqrt(
        values.shape[1]) / float(unit)


def noise_of(k, samples, sd, count, unit=1.0):
    """The gold rule's noise for k, divided by `unit`: paired_noise of samples [ticks][n] where every tick has them,
    else fall_noise of the start's sd over `count` samples."""
    paired = paired_noise(k, samples, unit)
    return paired if paired is not None else fall_noise(k, None if sd is None else sd / unit, count)


def _passed(gold, margin, distance, noise):
    """gold_passed_peak's test on all of `gold` (patience 1); noise a number or noise(best, last) (paired_noise)."""
    if len(gold) < 3:
        return None
    gain = gold - gold[0]
    best = int(np.argmax(gain))
    if callable(noise):
        noise = noise(best, len(gold) - 1)
    if gain[best] <= 0 or best == len(gold) - 1 or gain[best] - gain[-1] < noise:
        return None
    if gain[-1] <= (1 - margin) * gain[best]:
        return best
    if distance is None or len(gold) < 4:
        return None
    fit = fit_gold(distance, gain)
    return best if fit['peak_distance'] is not None and fit['peak_distance'] < distance[-1] else None


def gold_passed_peak(gold, margin=0.2, distance=None, noise=0.0, patience=1):
    """Index of the gold peak when gold [ticks] (per-tick panel means, the start first) has fallen from it by at least
    `noise` (in gold's units; a number, or noise(best, last) of the two ticks compared) and by margin x its gain over
    the start, or has so fallen by `noise` and the fit of gold against distance [ticks] so far peaks before the latest
    distance, at each of the last `patience` records; else None."""
    gold = np.asarray(gold, dtype=np.float64)
    d = None if distance is None else np.asarray(distance, dtype=np.float64)
    if patience < 1 or len(gold) < patience:
        return None
    hits = [_passed(gold[:i + 1], margin, None if d is None else d[:i + 1], noise)
        for i in range(len(gold) - patience, len(gold))]
    return None if any(h is None for h in hits) else hits[-1]


def disagreement_grew(disagreement, factor=2.0):
    """The first index at which disagreement [ticks] (the start first) reached factor x its start, else None."""
    dis = np.asarray(disagreement, dtype=np.float64)
    if len(dis) < 2 or not dis[0] > 0:
        return None
    hits = np.nonzero(dis[1:] >= factor * dis[0])[0]
    return int(hits[0]) + 1 if len(hits) else None


def stop_rule(gold, disagreement, distance, margin=0.2, factor=2.0, noise=0.0, patience=1):
    """--stop-at-peak on the records so far: ('gold', index of the peak) once gold_passed_peak fires; without gold
    (gold None), ('disagreement', first index) once disagreement_grew fires; else None."""
    if gold is not None:
        best = gold_passed_peak(gold, margin, distance, noise, patience)
        return None if best is None else ('gold', best)
    grew = disagreement_grew(disagreement, factor)
    return None if grew is None else ('disagreement', grew)

#----------------------------------------------------------------------------
# Distances from the start.

def slab_rms(slabs, start):
    """Mean over samples of the RMS difference of raw sigma between slabs and the start's at the same seeds."""
    a, b = np.asarray(slabs, dtype=np.float64), np.asarray(start, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f'slabs {a.shape} and the start\'s {b.shape} differ')
    return float(np.sqrt(((a - b) ** 2).reshape(len(a), -1).mean(axis=1)).mean())


def parameter_rms(params, start):
    """RMS change of a network's parameters: sqrt(mean((theta - theta_0)^2)) over every entry of equal-length
    flat vectors."""
    a, b = np.asarray(params, dtype=np.float64), np.asarray(start, dtype=np.float64)
    return float(np.sqrt(((a - b) ** 2).mean()))

#----------------------------------------------------------------------------
# The record of one run: per recorded tick (the start first) the panel's proxy (members' mean, the optimised
# aggregate, each member's mean), the members' disagreement, the gold taste's mean where one is simulated, and the
# distances from the start. Plain lists, so a snapshot keeps them and a resumed run continues the curves.

FIELDS = ('kimg', 'proxy', 'aggregate', 'disagreement', 'gold', 'distance', 'param_distance', 'members')
OPTIONAL = ('gold_samples',)    # Each tick's gold of every panel sample (the same seeds), where recorded; else None.


class Curves:
    """The rows so far, and the panel's spread at the start (scale: {'proxy': sd, 'gold': sd} over the panel's samples,
    the unit the gains are stated in, and 'samples': how many the panel has, where recorded)."""

    def __init__(self, state=None):
        state = dict(state or {})
        self.scale = dict(state.pop('scale', {}))
        self.rows = {k: [] for k in FIELDS + OPTIONAL}
        for k, values in state.items():
            if k not in self.rows:
                raise ValueError(f'unknown proxy-gold field {k!r}')
            self.rows[k] = list(values)
        if state and 'gold_samples' not in state:      # (Curves written before the field: none recorded.)
            self.rows['gold_samples'] = [None] * len(self)

    def add(self, **row):
        if not set(FIELDS) <= set(row) <= set(FIELDS + OPTIONAL):
            raise ValueError(f'a proxy-gold row needs {", ".join(FIELDS)} (and may have {", ".join(OPTIONAL)})')
        for k in FIELDS + OPTIONAL:
            self.rows[k].append(row.get(k))

    def state(self):
        return dict({k: list(v) for k, v in self.rows.items()}, scale=dict(self.scale))

    def __len__(self):
        return len(self.rows['kimg'])

    def has_gold(self):
        return len(self) > 0 and all(g is not None for g in self.rows['gold'])

    def gains(self, name):
        """numpy [ticks]: the change of a per-tick mean since the start, in sd of the start over the panel (scale)."""
        values = np.asarray(self.rows[name], dtype=np.float64)
        sd = self.scale.get(name) or 1.0
        return (values - values[0]) / sd

    def fall_noise(self, k, unit=None):
        """The stop rule's noise for k: paired_noise of the recorded per-sample gold where every tick has it, else
        fall_noise's bound (0 where the panel's size is unrecorded); in gold's units divided by `unit` (default: the
        start's sd, the units of gains())."""
        unit = (self.scale.get('gold') or 1.0) if unit is None else unit
        return noise_of(k, self.rows['gold_samples'], self.scale.get('gold', 1.0), self.scale.get('samples'), unit)

    def stop(self, margin=0.2, factor=2.0, noise=0.0, patience=1):
        """stop_rule on the rows so far, noise a multiple k of the gold's standard error (fall_noise)."""
        gold = self.rows['gold'] if self.has_gold() else None
        return stop_rule(gold, self.rows['disagreement'], self.rows['distance'], margin, factor,
            self.fall_noise(noise, unit=1.0), patience)

    def summary(self, margin=0.2, factor=2.0, form='best', noise=0.0, patience=1):
        """What the curves say: the observed gold peak (kimg, distance, gain), the fit of `form` and the tick nearest its
        predicted peak, the ticks where the gold (noise: its k, see fall_noise; patience) and the disagreement stop
        rules would have stopped, and the fit of the ticks up to the gold rule's stop (fit_at_stop: what a run stopped
        there predicts)."""
        kimg, distance = self.rows['kimg'], np.asarray(self.rows['distance'], dtype=np.float64)
        out = dict(ticks=len(self), distance=[float(d) for d in distance], proxy_gain=self.gains('proxy').tolist())
        grew = disagreement_grew(self.rows['disagreement'], factor)
        out['disagreement_stop_kimg'] = None if grew is None else kimg[grew]
        if not self.has_gold():
            return out
        gain = self.gains('gold')
        best = int(np.argmax(gain))
        fit = fit_gold(distance, gain, form)
        out.update(gold_gain=gain.tolist(), observed_peak=dict(kimg=kimg[best], distance=float(distance[best]),
            gain=float(gain[best])), fit=fit)
        if fit['peak_distance'] is not None:                     # Beyond twice the run's reach it is extrapolation.
            out['fit']['beyond_run'] = bool(fit['peak_distance'] > 2 * distance.max())
            out['fit']['peak_kimg'] = None if out['fit']['beyond_run'] else \
                kimg[int(np.argmin(np.abs(distance - fit['peak_distance'])))]
        passed = [gold_passed_peak(gain[:i + 1], margin, distance[:i + 1], self.fall_noise(noise), patience)
            for i in range(len(gain))]
        first = next((i for i, p in enumerate(passed) if p is not None), None)
        out['gold_stop_kimg'] = None if first is None else kimg[first]
        # What a run that stops there has seen: the fit of the ticks up to the stop, as --stop-at-peak reports it.
        out['fit_at_stop'] = None if first is None else fit_gold(distance[:first + 1], gain[:first + 1], form)
        return out


def plot_curves(summary, path, gold_name='gold', distance_name='slab RMS of raw sigma, same seeds'):
    """Proxy and gold gains (Curves.summary) against the distance from the start, each in standard deviations of its
    start over the panel, with the fitted gold curve and its peak."""
    from eg3d_rlhf.analysis.report_plots import _pyplot, _save
    plt = _pyplot()
    d = np.asarray(summary['distance'])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(d, summary['proxy_gain'], 'o-', color='tab:blue', label='proxy: reward (members\' mean)')
    if 'gold_gain' in summary:
        ax.plot(d, summary['gold_gain'], 's-', color='tab:orange', label=f'gold: {gold_name}')
        fit = summary['fit']
        if fit['alpha'] is not None:
            x = np.linspace(0, d.max() * 1.1, 200)
            ax.plot(x, predict(x, fit['alpha'], fit['beta'], fit['form']), '--', color='tab:orange',
                label=f'fit {fit["form"]}: a={fit["alpha"]:.3g}, b={fit["beta"]:.3g}')
            if fit['peak_distance'] is not None and fit['peak_distance'] <= d.max() * 1.5:
                ax.axvline(fit['peak_distance'], color='tab:orange', linestyle=':', label='fitted gold peak')
        early = summary.get('fit_at_stop') or {}
        if early.get('alpha') is not None:                      # What a run stopped by the gold rule predicted.
            x = np.linspace(0, d.max() * 1.1, 200)
            ax.plot(x, predict(x, early['alpha'], early['beta'], early['form']), '-.', color='tab:green',
                label=f'fit of the ticks up to the stop at {summary["gold_stop_kimg"]:g} kimg')
            if early['peak_distance'] is not None and early['peak_distance'] <= d.max() * 1.5:
                ax.axvline(early['peak_distance'], color='tab:green', linestyle=':', label='its predicted peak')
    ax.axhline(0, color='grey', linewidth=0.8)
    ax.set(xlabel=f'distance from the start ({distance_name})',
        ylabel='gain since the start (sd of the start over the panel)', title='Proxy and gold along the run')
    ax.legend(loc='best', fontsize=8)
    _save(fig, path)

#----------------------------------------------------------------------------
