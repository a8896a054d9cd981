"""README's headline table: one row per claim, each read from its replication.json, kept in one machine-written file."""

import json
import math
import os

import dnnlib
from eg3d_rlhf.analysis.replication import fmt_ci, fmt_effect, fmt_p, markdown_table

#----------------------------------------------------------------------------
# docs/results/headlines.json holds the rows; `eg3d-rlhf headline --add` writes a row from a replication.json (tools/
# replicate.py, tools/sweep_circular.py --train-seeds) and `eg3d-rlhf headline` renders README.md's table between
# the two markers below, so each headline number has one source: the replication file of its dated results entry.

START, END = '<!-- headlines: written by eg3d-rlhf headline -->', '<!-- /headlines -->'
MAX_BYTES = 1 << 22


class HeadlineError(ValueError):
    """A file that cannot be read as a headline's source; the message names it and the fix."""


def read_json(path, what):
    """A JSON object from `path`; HeadlineError naming the file otherwise."""
    blob = dnnlib.util.read_bounded(path, MAX_BYTES, HeadlineError, f'a {what}')
    try:
        data = json.loads(blob, parse_constant=lambda c: float('nan'))
    except ValueError as err:
        raise HeadlineError(f'{path}: not JSON ({err}); give a {what}') from None
    if not isinstance(data, dict):
        raise HeadlineError(f'{path}: expected a JSON object; give a {what}')
    return data


def number(value, path, name):
    """A finite float, or HeadlineError naming the file and the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HeadlineError(f'{path}: {name} is {value!r}, not a finite number; regenerate the file')
    return float(value)


def row_of(path, contrast=None):
    """{effect, ci95, above, below, seeds, wilcoxon_p, holm_p, kind} of one contrast (the only one, or the named) of
    a replication.json; HeadlineError naming the file for anything else."""
    table = read_json(path, 'replication.json (tools/replicate.py)')
    found = [c for c in table.get('contrasts') or [] if isinstance(c, dict) and contrast in (None, c.get('contrast'))]
    if len(found) != 1:
        names = [c.get('contrast') for c in table.get('contrasts') or [] if isinstance(c, dict)]
        raise HeadlineError(f'{path}: {"no contrast " + repr(contrast) if contrast else "several contrasts"} '
            f'(it has {names}); name one with --contrast')
    c, a = found[0], found[0].get('across')
    if not isinstance(a, dict) or c.get('kind') not in ('preference', 'difference'):
        raise HeadlineError(f'{path}: contrast {c.get("contrast")!r} has no across-seed result; regenerate the file')
    ci = a.get('ci95')
    if not isinstance(ci, list) or len(ci) != 2:
        raise HeadlineError(f'{path}: across.ci95 must be two numbers; regenerate the file')
    row = dict(kind=c['kind'], contrast=str(c.get('contrast')), effect=number(a.get('effect'), path, 'across.effect'),
        ci95=[number(v, path, 'across.ci95') for v in ci], wilcoxon_p=number(a.get('wilcoxon_p'), path, 'wilcoxon_p'),
        holm_p=number(a.get('holm_p'), path, 'holm_p'))
    for name in ('seeds', 'above', 'below'):
        row[name] = int(number(a.get(name), path, f'across.{name}'))
    return row


def load(path):
    """The rows of headlines.json ([] when it does not exist)."""
    if not os.path.exists(path):
        return []
    rows = read_json(path, 'headlines.json (eg3d-rlhf headline --add)').get('rows')
    if not isinstance(rows, list) or not all(isinstance(r, dict) and {'claim', 'entry', 'result'} <= set(r) for r in rows):
        raise HeadlineError(f'{path}: expected {{"rows": [{{"claim", "entry", "result", ...}}]}}; rebuild it with '
            'eg3d-rlhf headline --add')
    return rows


def add(path, claim, entry, result):
    """headlines.json with the row of `claim` set (replaced, or appended), written atomically; returns the rows."""
    rows = [r for r in load(path) if r['claim'] != claim] + [dict(claim=claim, entry=entry, result=result)]
    with dnnlib.util.atomic_write(path, 'w', encoding='utf-8') as f:
        json.dump(dict(rows=rows), f, indent=2, allow_nan=False)
    return rows


def table(rows):
    """The Markdown headline table of the rows."""
    body = []
    for r in rows:
        x, kind = r['result'], r['result']['kind']
        body.append([f'[{r["claim"]}]({r["entry"]})', fmt_effect(x['effect'], kind), fmt_ci(x['ci95'], kind),
            f'{x["above"]} of {x["seeds"]}', fmt_p(x['wilcoxon_p']), fmt_p(x['holm_p'])])
    return markdown_table(['claim (test seeds)', 'across training seeds', '95% interval', 'seeds better', 'Wilcoxon p',
        'Holm p (the entry\'s contrasts)'], body)


def spliced(text, rows, name='README.md'):
    """`text` with the table between START and END replaced by the rows' table; HeadlineError without the markers."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise HeadlineError(f'{name}: needs one {START} line and one {END} line after it, around the table')
    head, rest = text.split(START)
    return head + START + '\n' + table(rows) + END + rest.split(END, 1)[1]

#----------------------------------------------------------------------------
