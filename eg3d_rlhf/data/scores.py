"""Per-sample scores: id,reward CSV files, and a bank's samples scored by a reward model through its contract."""

import csv
import math

import dnnlib

#----------------------------------------------------------------------------
# The file: a header "id,reward", then one "id,number" row per sample (tools/score_bank.py writes it in id order,
# tools/annotate.py --scores-out the oracle's noise-free scores; tools/train_reward.py --truth reads it).

class ScoresError(ValueError):
    """A score file that cannot be read, or a bank that a reward model cannot score; the message says where."""


def read_scores(path, known_ids=None, complete=False):
    """{id: float} from an id,reward CSV; ScoresError of one line naming the file (and the line) for a file that is not
    UTF-8, a row that is not "id,finite number", a field too long for a CSV reader, an id given twice or not in
    known_ids, and with `complete`, for known_ids it gives no score."""
    known = None if known_ids is None else set(known_ids)
    scores, lines = {}, {}
    with dnnlib.util.open_regular(path, 'r', error=ScoresError, newline='', encoding='utf-8') as f:   # Never a FIFO.
        rows = csv.reader(f)
        try:
            if [h.strip() for h in next(rows, [])][:2] != ['id', 'reward']:
                raise ScoresError(f'{path}:1: expected the header "id,reward"')
            for row in rows:
                lineno = rows.line_num
                try:
                    value = float(row[1])
                except (IndexError, ValueError):
                    raise ScoresError(f'{path}:{lineno}: expected "id,number", got {",".join(row)[:80]!r}') from None
                if not math.isfinite(value):
                    raise ScoresError(f'{path}:{lineno}: reward {row[1].strip()} is not a finite number; give each '
                        'sample a finite score')
                if known is not None and row[0] not in known:
                    raise ScoresError(f'{path}:{lineno}: unknown sample id {row[0][:80]}')
                if row[0] in lines:
                    raise ScoresError(f'{path}:{lineno}: sample id {row[0]} is given twice (first on line '
                        f'{lines[row[0]]})')
                scores[row[0]], lines[row[0]] = value, lineno
        except UnicodeDecodeError as err:
            raise ScoresError(f'{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8') from None
        except csv.Error as err:
            raise ScoresError(f'{path}:{rows.line_num}: {err}; not an id,reward file') from None
    missing = sorted(known - set(scores)) if complete and known is not None else []
    if missing:
        raise ScoresError(f'{path}: no score for {len(missing)} of the {len(known)} samples (first: {missing[0]}); '
            'give one row per sample')
    return scores


def write_scores(path, scores):
    """{id: number} as an id,reward CSV, in the dict's order, atomically."""
    with dnnlib.util.atomic_write(path, 'w', encoding='utf-8') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(['id', 'reward'])
        for sample_id, value in scores.items():
            writer.writerow([sample_id, repr(float(value))])

#----------------------------------------------------------------------------
# Scoring a bank. `reward` is a rewards.contract.Reward (duck-typed: data/ does not import rewards/): it reads raw
# sigma on the grid of its input spec and prepares it itself, so the bank's raw slabs go in as they are.

def _grid_key(grid):
    return grid.resolution, grid.cube_length, tuple(grid.start), tuple(grid.stop)


def _describe(grid, other):
    words = f'the {grid.resolution}^3 grid, shape {list(grid.shape)}'
    return words + (f', cube length {grid.cube_length:g}' if grid.cube_length != other.cube_length else '')


def check_grid(reward, bank, reward_name, bank_name):
    """ScoresError unless the bank's slabs lie on the grid of the reward's input spec (reward.spec.slab)."""
    want, have = reward.spec.grid, bank.grid(bank.ids[0])
    if _grid_key(want) != _grid_key(have):
        raise ScoresError(f'{bank_name}: slabs of {_describe(have, want)}, but {reward_name} was trained on '
            f'{_describe(want, have)}; use a bank drawn on the reward\'s grid, or a reward trained on the bank\'s')


def score_bank(reward, bank, batch=8, progress=None, members=False, ids=None):
    """{id: reward} of every sample of the bank (or of `ids`), in that order: the raw slabs through reward.score_slabs,
    `batch` at a time (progress(n) after each batch of n); with members, {id: [every ensemble member's reward]}. A score
    that is not finite stops it (rewards.contract.ScoreError naming the sample)."""
    ids = bank.ids if ids is None else list(ids)
    values = reward.score_slabs((bank.slab(i) for i in ids), batch=batch, progress=progress, members=members, names=ids)
    return dict(zip(ids, values.tolist()))

#----------------------------------------------------------------------------
