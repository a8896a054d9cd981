"""Per-sample scores: id,reward CSV files, and a bank's samples scored by a reward model through its contract."""

import csv

import dnnlib

#----------------------------------------------------------------------------
# The file: a header "id,reward", then one "id,number" row per sample (tools/score_bank.py writes it in id order,
# tools/annotate.py --scores-out the oracle's noise-free scores; tools/train_reward.py --truth reads it).

class ScoresError(ValueError):
    """A score file that cannot be read, or a bank that a reward model cannot score; the message says where."""


def read_scores(path, known_ids=None):
    """{id: float} from an id,reward CSV; ScoresError with the line number for a bad row or an id not in known_ids."""
    known = None if known_ids is None else set(known_ids)
    scores = {}
    with dnnlib.util.open_regular(path, 'r', error=ScoresError, newline='', encoding='utf-8') as f:   # Never a FIFO.
        rows = csv.reader(f)
        if [h.strip() for h in next(rows, [])][:2] != ['id', 'reward']:
            raise ScoresError(f'{path}:1: expected the header "id,reward"')
        for lineno, row in enumerate(rows, start=2):
            try:
                scores[row[0]] = float(row[1])
            except (IndexError, ValueError):
                raise ScoresError(f'{path}:{lineno}: expected "id,number", got {",".join(row)!r}') from None
            if known is not None and row[0] not in known:
                raise ScoresError(f'{path}:{lineno}: unknown sample id {row[0]}')
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
            f'{_describe(want, have)}')


def score_bank(reward, bank, batch=8, progress=None, members=False):
    """{id: reward} of every sample of the bank, in id order: its raw slabs through reward.score_slabs, `batch` at a
    time (progress(n) after each batch of n); with members, {id: [every ensemble member's reward]}."""
    values = reward.score_slabs((bank.slab(i) for i in bank.ids), batch=batch, progress=progress, members=members)
    return dict(zip(bank.ids, values.tolist()))

#----------------------------------------------------------------------------
