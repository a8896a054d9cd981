"""The report of a reward model's fit, beside its checkpoint: STEM.report.json and STEM.curves.png."""

import json
import os

import dnnlib
from eg3d_rlhf.analysis import report_plots

#----------------------------------------------------------------------------

SIDE_FILES = ('.metrics.jsonl', '.report.json', '.curves.png')     # Beside the checkpoint: the log, then the report.


def finished(out):
    """Whether a fit to checkpoint `out` ended: tools/train_reward.py writes the checkpoint before STEM.report.json, so
    without the report it stopped part-way, and a fit again must write over its files (--force)."""
    return os.path.isfile(out) and os.path.isfile(os.path.splitext(out)[0] + '.report.json')


def report(out, summary, records):
    """Write the fit's summary (what it was fitted on and rewards.fitting.fit_reward's report) as STEM.report.json and
    its per-epoch records (or per-L2 records of linear heads) as STEM.curves.png beside the checkpoint `out`; returns
    the summary."""
    stem = os.path.splitext(out)[0]
    with dnnlib.util.atomic_write(stem + '.report.json', 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2)
    report_plots.plot_training_curves(records, stem + '.curves.png')
    return summary

#----------------------------------------------------------------------------
