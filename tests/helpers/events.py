"""TensorBoard event files of a run read back: tensorboard's EventAccumulator and the steps of a scalar."""

import glob
import os

#----------------------------------------------------------------------------

def events(folder):
    """tensorboard's EventAccumulator of every events file in `folder`, loaded (images kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator # pylint: disable=import-outside-toplevel
    files = glob.glob(os.path.join(folder, 'events.out.tfevents.*'))
    assert files, f'no events file in {folder}: {sorted(os.listdir(folder))}'
    accumulator = EventAccumulator(folder, size_guidance={'scalars': 0, 'images': 0})
    accumulator.Reload()
    return accumulator


def steps(accumulator, tag):
    return [e.step for e in accumulator.Scalars(tag)]

#----------------------------------------------------------------------------
