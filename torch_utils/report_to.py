"""Run logs for TensorBoard or Weights & Biases (`--report-to`): a run's scalars and pictures, next to its stats.jsonl."""

import contextlib
import importlib.util
import os
import random
import sys

import numpy as np
import PIL.Image
import torch

#----------------------------------------------------------------------------
# open_writer(run_dir, report_to) gives an object with scalars(step, {name: number}), image(name, step, PNG path or
# array) and close(). 'tensorboard' writes run_dir/events.out.tfevents.* (`tensorboard --logdir` on the run's parent
# lists every run), 'wandb' a W&B run in run_dir/wandb/ (WANDB_MODE=offline never needs a network), 'none' nothing.
# The default is 'tensorboard' where it is installed, else 'none'. Only rank 0 opens one. Every call leaves Python's,
# numpy's and torch's random state as it found it, so a run takes the same steps whatever it reports to.

CHOICES = ('tensorboard', 'wandb', 'none')
HELP = ('Also log every stats.jsonl scalar and the run\'s pictures for TensorBoard (events file in the run folder) or '
    'W&B (WANDB_MODE=offline needs no network)  [default: tensorboard where installed, else none]')

class ReportError(RuntimeError):
    """--report-to cannot be honoured (its library is missing, or W&B could not start); one line."""


def installed(library):
    return importlib.util.find_spec(library) is not None


_said_default = False

def resolve(report_to=None):
    """The reporter to use: report_to, or the default when None (said once when tensorboard is missing); ReportError
    when its library is not installed."""
    global _said_default
    if report_to is None:
        report_to = 'tensorboard' if installed('tensorboard') else 'none'
        if report_to == 'none' and not _said_default:
            print('--report-to: tensorboard is not installed, so no TensorBoard log is written (pip install tensorboard)',
                file=sys.stderr)
            _said_default = True
    if report_to not in CHOICES:
        raise ReportError(f'--report-to={report_to}: choose one of {", ".join(CHOICES)}')
    if report_to != 'none' and not installed(report_to):
        raise ReportError(f'--report-to {report_to} needs `pip install {report_to}`')
    return report_to


def open_writer(run_dir, report_to=None, name=None, config=None):
    """A writer of run_dir's log (report_to resolved as resolve() does); name and config label a W&B run."""
    kind = resolve(report_to)
    writer = dict(none=NullWriter, tensorboard=TensorBoardWriter, wandb=WandbWriter)[kind]
    with kept_random_state():
        return writer(run_dir, name=name, config=config)

#----------------------------------------------------------------------------

@contextlib.contextmanager
def kept_random_state():
    """Python's, numpy's and torch's (CPU) random state restored on leaving: logging draws nothing from a run."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def flat_scalars(record, prefix='', skip=()):
    """{'prefix/name': float} of a stats record: numbers as they are (bools and text left out), nested dicts as
    'name/key', numeric lists as 'name/mean', 'name/min' and 'name/max'; keys in `skip` left out at the top level."""
    out = {}
    for key, value in record.items():
        if key in skip:
            continue
        name = f'{prefix}/{key}' if prefix else str(key)
        if isinstance(value, dict):
            out.update(flat_scalars(value, name))
        elif isinstance(value, (list, tuple)) and value and all(is_number(v) for v in value):
            values = np.asarray(value, dtype=np.float64)
            out.update({f'{name}/mean': float(values.mean()), f'{name}/min': float(values.min()),
                f'{name}/max': float(values.max())})
        elif is_number(value):
            out[name] = float(value)
    return out


def is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def picture_array(picture):
    """uint8 [H, W, 3] of a PNG path or an image array ([H, W], [H, W, 1 | 3 | 4]; uint8, or floats in [0, 1])."""
    if isinstance(picture, (str, os.PathLike)):
        with PIL.Image.open(picture) as image:
            return np.asarray(image.convert('RGB'))
    array = np.asarray(picture)
    if array.dtype != np.uint8:
        array = np.rint(np.clip(array.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f'a picture must be [H, W] or [H, W, 1|3|4], got {list(array.shape)}')
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[:, :, :3]

#----------------------------------------------------------------------------

class NullWriter:
    """--report-to none: nothing is written."""

    def __init__(self, run_dir=None, name=None, config=None):
        pass

    def scalars(self, step, values, walltime=None):
        pass

    def image(self, name, step, picture):
        pass

    def close(self):
        pass


class TensorBoardWriter(NullWriter):
    """run_dir/events.out.tfevents.* through torch's SummaryWriter, flushed after every call."""

    def __init__(self, run_dir, name=None, config=None):
        from torch.utils.tensorboard import SummaryWriter  # pylint: disable=import-outside-toplevel
        self.writer = SummaryWriter(log_dir=run_dir)

    def scalars(self, step, values, walltime=None):
        with kept_random_state():
            for tag, value in values.items():
                self.writer.add_scalar(tag, float(value), global_step=int(step), walltime=walltime)
            self.writer.flush()

    def image(self, name, step, picture):
        with kept_random_state():
            self.writer.add_image(name, picture_array(picture), global_step=int(step), dataformats='HWC')
            self.writer.flush()

    def close(self):
        self.writer.close()


class WandbWriter(NullWriter):
    """A W&B run in run_dir/wandb/ (project $WANDB_PROJECT, else eg3d-rlhf; mode from $WANDB_MODE); the console is
    left alone (the run's log.txt has it)."""

    def __init__(self, run_dir, name=None, config=None):
        import wandb  # pylint: disable=import-outside-toplevel
        self.wandb = wandb
        try:
            self.run = wandb.init(dir=run_dir, name=name or os.path.basename(os.path.abspath(run_dir)),
                project=os.environ.get('WANDB_PROJECT', 'eg3d-rlhf'), config=config,
                settings=wandb.Settings(console='off', silent=True))
        except Exception as err:                                    # Not logged in, no network: one line.
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ReportError(f'--report-to wandb: {first} (WANDB_MODE=offline logs without an account)') from None

    def scalars(self, step, values, walltime=None):
        with kept_random_state():
            self.run.log({tag: float(value) for tag, value in values.items()}, step=int(step))

    def image(self, name, step, picture):
        with kept_random_state():
            self.run.log({name: self.wandb.Image(picture_array(picture))}, step=int(step))

    def close(self):
        with kept_random_state():
            self.run.finish()

#----------------------------------------------------------------------------
