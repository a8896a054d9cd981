"""Replay --stop-at-peak's rules on recorded proxy-gold curves: where each would stop, and which tick it names."""

import json
import math

import click

from eg3d_rlhf.analysis.overoptimization import FIELDS, Curves
from eg3d_rlhf.cli import FiniteRange

#----------------------------------------------------------------------------
# Curves are found wherever a file holds them: tools/overoptimize.py's overoptimization.json ({"curves": {run: ...}}),
# a flow run's report.json or an EG3D run's reward_report.json ({"proxy_gold": ...}; Circular-DPO's per group). Each
# is a dict with "rows": Curves.state() (the fields and "scale").

def found_curves(node, name=''):
    """[(name, Curves.state())] of every dict under `node` whose "rows" holds a Curves state."""
    if isinstance(node, list):
        return [hit for i, item in enumerate(node) for hit in found_curves(item, f'{name}[{i}]')]
    if not isinstance(node, dict):
        return []
    rows = node.get('rows')
    if isinstance(rows, dict) and set(FIELDS) <= set(rows):
        return [(name or 'run', rows)]
    return [hit for key, value in node.items() for hit in found_curves(value, f'{name}/{key}' if name else str(key))]


def load(path, samples):
    """[(name, Curves)] of the file; ClickException of one line when it holds none or a bad one."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f'{c} is not a number')))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise click.ClickException(f'{path}: not a readable JSON file ({str(err).splitlines()[0]})')
    out = []
    for name, state in found_curves(data):
        state = dict(state)
        scale = dict(state.get('scale') or {})
        if samples is not None:
            scale['samples'] = samples
        try:
            curves = Curves(dict(state, scale=scale))
            lengths = {len(v) for v in curves.rows.values()}
            gold = curves.rows['gold']
            finite = lambda values: all(isinstance(g, (int, float)) and math.isfinite(g) for g in values)
            if len(lengths) != 1 or not curves.has_gold() or not finite(gold + curves.rows['distance'] +
                    curves.rows['kimg']):
                raise ValueError('its rows are not of one length with finite gold, distance and kimg')
            if not all(s is None or isinstance(s, list) and finite(s) for s in curves.rows['gold_samples']):
                raise ValueError('its gold_samples are not lists of finite numbers')
        except (TypeError, ValueError) as err:
            raise click.ClickException(f'{path}: the curves at {name} are not usable ({err}); the file is damaged '
                'or from a run without --gold-taste')
        out.append((name, curves))
    if not out:
        raise click.ClickException(f'{path}: holds no proxy-gold curves with gold; give a run\'s report.json, '
            'reward_report.json or tools/overoptimize.py\'s overoptimization.json')
    return out


#----------------------------------------------------------------------------

@click.command()
@click.argument('files', nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option('--peak-margin', type=FiniteRange(0, 1, max_open=True), default=0.2, show_default=True,
    help='Share of the gold\'s peak gain whose loss stops')
@click.option('--peak-noise', type=FiniteRange(min=0), default=2.0, show_default=True,
    help='Standard errors the fall must also reach: of the samples\' paired changes where the curves record each '
    'sample\'s gold, else of the difference of two panel means')
@click.option('--peak-patience', type=click.IntRange(min=1), default=1, show_default=True,
    help='Ticks in a row the gold rule must hold')
@click.option('--samples', type=click.IntRange(min=2), help='Panel samples, for curves recorded without their count  '
    '[default: the count the curves record; without one the noise test is off]')
def main(files, peak_margin, peak_noise, peak_patience, samples):
    """Print, for each run's curves in FILES, the gold's peak and where the gold stop rule with these settings fires
    and which tick it names as the peak (the tick whose snapshot a stopped run keeps), and how far the gold fell from
    its peak to the next tick, with one standard error of that fall. Gains are in sd of the start."""
    print('| file | run | gold peak: kimg (gain) | gold at the end | noise (sd) | rule fires: kimg '
        '| it names: kimg (gain) | first fall after the peak (1 SE) |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- |')
    for path in files:
        for name, curves in load(path, samples):
            gain, kimg = curves.gains('gold'), curves.rows['kimg']
            best = int(gain.argmax())
            stop = curves.summary(peak_margin, noise=peak_noise, patience=peak_patience)['gold_stop_kimg']
            fires = None if stop is None else kimg.index(stop)
            named = None if fires is None else int(gain[:fires + 1].argmax())    # The best so far: what it names.
            text = lambda noise, later: f'{noise(best, later):.3g} paired' if callable(noise) else f'{noise:.3g}'
            first = '-' if best == len(gain) - 1 else (f'{gain[best] - gain[best + 1]:.3g} '
                f'({text(curves.fall_noise(1.0), best + 1)})')            # Could a rule see it a tick after the peak?
            print(f'| {path} | {name} | {kimg[best]:g} ({gain[best]:+.2f}) | {gain[-1]:+.2f} | '
                f'{text(curves.fall_noise(peak_noise), len(gain) - 1)} | {"-" if fires is None else f"{kimg[fires]:g}"} | '
                f'{"-" if named is None else f"{kimg[named]:g} ({gain[named]:+.2f})"} | {first} |')


if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
