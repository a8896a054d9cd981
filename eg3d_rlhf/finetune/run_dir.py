"""Where every method's run goes: its device, and its folder outdir/NNNNN-desc with options, log.txt, stats.jsonl."""

import contextlib
import json
import os
import re
import sys
import time

import torch

import dnnlib
from eg3d_rlhf.finetune.options import RunError
from torch_utils import report_to
from training import distributed

#----------------------------------------------------------------------------
# Every method's run folder is made here and holds the same things: its options (options.json; EG3D's own runs name
# it training_options.json, as EG3D does), log.txt (everything printed), stats.jsonl (one JSON record a line, written
# as it happens), the method's snapshots and PNGs, and report.json / report.html (analysis/report_plots.py).

def pick_device(name, gpus=1):
    """'cpu' or 'cuda' of --device (auto = cuda if available); RunError when CUDA or enough devices are missing."""
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        raise RunError('--device=cuda: CUDA is not available on this machine')
    if name == 'cuda' and distributed.torchrun_env() is None and gpus > torch.cuda.device_count():
        raise RunError(f'--gpus={gpus}, but this machine has {torch.cuda.device_count()} CUDA devices')
    return name


def pick_reporter(name):
    """--report-to's reporter (None = tensorboard where installed, else none); RunError when its library is missing."""
    try:
        return report_to.resolve(name)
    except report_to.ReportError as err:
        raise RunError(str(err))


def next_run_dir(outdir, desc):
    """outdir/NNNNN-desc with NNNNN one above the highest existing run number."""
    prev_ids = []
    if os.path.isdir(outdir):
        prev_ids = [re.match(r'^\d+', x) for x in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, x))]
    cur_id = max((int(m.group()) for m in prev_ids if m is not None), default=-1) + 1
    return os.path.join(outdir, f'{cur_id:05d}-{desc}')


writable_problem = dnnlib.util.writable_problem       # Where it lives; run_dir's name kept for its callers.


def write_options(run_dir, options, name='options.json'):
    """Write a run's options (JSON) into its folder, atomically."""
    with dnnlib.util.atomic_write(os.path.join(run_dir, name), 'w') as f:
        json.dump(options, f, indent=2)


def create(run_dir, options, name='options.json'):
    """Make a new run folder holding its options; it must not exist yet."""
    os.makedirs(run_dir)
    write_options(run_dir, options, name)

#----------------------------------------------------------------------------

class _Tee:
    """Copy everything written to a stream into an open log file as well."""

    def __init__(self, stream, file):
        self.stream = stream
        self.file = file

    def write(self, text):
        self.stream.write(text)
        self.file.write(text)
        self.file.flush()

    def flush(self):
        self.stream.flush()
        self.file.flush()


@contextlib.contextmanager
def log_to(path):
    """Append stdout and stderr to `path` (log.txt) inside the block."""
    with open(path, 'a') as f:
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, f), _Tee(sys.stderr, f)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved

#----------------------------------------------------------------------------

class StatsLog:
    """stats.jsonl of a run: log(record) appends it with the seconds since the log began; records keeps them all.

    A writer (torch_utils/report_to.py) gets every record's numbers too, at the count of 'step' records so far: a
    step's as TRL names them in TensorBoard ('train/loss', 'train/rewards/accuracies', ...), an 'eval' record's as
    'eval/<group>/<name>', any other kind's as '<kind>/<name>'."""

    def __init__(self, run_dir, name='stats.jsonl', writer=None):
        self.path = os.path.join(run_dir, name)
        self.start = time.time()
        self.records = []
        self.writer = writer or report_to.NullWriter()
        self.step = 0                                   # Training steps logged so far: the writer's step.

    def __call__(self, record):
        record = dict(record, time=round(time.time() - self.start, 3))
        self.records.append(record)
        with open(self.path, 'a', encoding='utf-8') as f:
            f.write(json.dumps(dnnlib.util.json_safe(record), allow_nan=False) + '\n')
        kind = record.get('kind')
        self.step += int(kind == 'step')
        prefix = 'train' if kind == 'step' else f'eval/{record.get("group")}' if kind == 'eval' else str(kind)
        self.writer.scalars(self.step, report_to.flat_scalars(record, prefix, skip=('kind', 'step')))

    def keep(self, count):
        """Go on with an existing stats.jsonl (a resumed run's): its first `count` records are kept as records, and
        written again without any later ones."""
        with open(self.path, encoding='utf-8') as f:
            self.records = [json.loads(line) for line in f.read().splitlines()[:count]]
        with dnnlib.util.atomic_write(self.path, 'w', encoding='utf-8') as f:
            f.write(''.join(json.dumps(r, allow_nan=False) + '\n' for r in self.records))
        self.step = sum(r.get('kind') == 'step' for r in self.records)

    def image(self, name, path):
        """Give the writer a picture the run drew (at the current step)."""
        self.writer.image(name, self.step, path)

    def of_kind(self, kind):
        return [r for r in self.records if r.get('kind') == kind]

#----------------------------------------------------------------------------
