"""A Circular-DPO run's state.pt: its finished phases, step 2's candidates, the phase under way and every rank's RNG."""

import dataclasses
import json
import os
import random

import numpy as np
import torch

import dnnlib
from eg3d_rlhf.finetune.flow_dpo import PairData

#----------------------------------------------------------------------------
# With --snap-steps N every rank calls RunState.step_done after each training step; every N-th step of a phase and
# its last one, rank 0 gathers every rank's random state and writes state.pt (atomically) with what the run has done:
# the finished phases' weights (CircularDPO.memo, one state_dict per velocity model), step 2's candidates
# (CircularDPO.bridges), the finished groups (their flow-<group> files are written, their evaluation rows kept), the
# number of stats.jsonl records, and the phase under way: its key, step, trained model's and optimizer's state and
# early stopping's. --resume-run DIR starts the run again in DIR with the same options and number of processes: the
# finished phases and candidates come from the file, finished groups are skipped, everything logged before the
# snapshot is kept and the records a replay would log again are dropped (mute) until the phase under way resumes at
# its step (start_of), where every rank takes back its random state. Training draws its pairs, t and x0 from
# (seed, stage, step) and the all-reduce of two ranks is exact, so the resumed run ends with the weights of one that
# was never stopped. state.pt holds tensors, numbers and strings only (torch.load weights_only=True).

STATE = 'state.pt'
VERSION = 1


class StateError(ValueError):
    """A state.pt that cannot resume this run."""


def rng_state():
    """This process's random generators' states (torch, CUDA where initialised, numpy, Python) as plain data."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = dict(torch=torch.get_rng_state(), numpy=[name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
        gauss], python=random.getstate())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    """Take back the states rng_state returned."""
    torch.set_rng_state(state['torch'])
    name, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


def candidates_to_file(candidates):
    """Step 2's candidates (bridge_candidates' dict) with their PairData as a dict of its fields."""
    data = candidates['data']
    return dict(candidates, data={f.name: getattr(data, f.name) for f in dataclasses.fields(data)})


def candidates_from_file(stored):
    return dict(stored, data=PairData(**stored['data']))


class RunState:
    """state.pt of one run folder: written every `every` steps of a phase (0: never), and the state read to resume."""

    def __init__(self, run_dir, every=0, ranks=None, resume=False):
        self.path, self.every, self.ranks = os.path.join(run_dir, STATE), int(every), ranks
        self.size = 1 if ranks is None else ranks.size
        self.main = ranks is None or ranks.main
        self.loaded = self.read() if resume else None   # Until the phase under way resumes: a replay.
        self.done = list(self.loaded['done']) if self.loaded else []
        self.rows = json.loads(self.loaded['rows']) if self.loaded else []
        self.log = None                                 # StatsLog (rank 0) whose length the state records.

    def read(self):
        if not os.path.isfile(self.path):
            raise StateError(f'{self.path}: no such file; only a run with --snap-steps writes one')
        try:
            state = torch.load(self.path, map_location='cpu', weights_only=True)
        except Exception as err:    # pylint: disable=broad-except
            raise StateError(f'{self.path}: cannot be read ({str(err).splitlines()[0]})') from None
        if state.get('version') != VERSION:
            raise StateError(f'{self.path}: version {state.get("version")}, this code reads {VERSION}')
        if state['processes'] != self.size:
            raise StateError(f'{self.path}: written by {state["processes"]} processes; resume it with as many '
                f'(torchrun --nproc-per-node times --nnodes), not {self.size}')
        return state

    @property
    def replaying(self):
        return self.loaded is not None

    def mute(self, log):
        """log(record) that drops the records a replay logs again, until the phase under way resumes."""
        return lambda record: None if self.replaying else log(record)

    def restore(self, trainer):
        """Give a CircularDPO the finished phases and the candidates of the state read (nothing to do without one)."""
        if not self.replaying:
            return
        for key, states in self.loaded['memo'].items():
            pipeline = trainer.reference.frozen_copy()
            for module, state in zip(pipeline.modules(), states):
                module.load_state_dict(state)
            trainer.memo[key] = pipeline
        trainer.bridges.update({k: candidates_from_file(v) for k, v in self.loaded['bridges'].items()})
        try:                                                            # --probe-every's rows and stops.
            probes = json.loads(self.loaded.get('probes', 'null')) or {}
            start, rows, stopped = probes.get('start'), dict(probes.get('phases', {})), dict(self.loaded.get('stopped', {}))
            if not all(isinstance(r, dict) for rs in rows.values() for r in rs) or (start is not None and
                    not isinstance(start, dict)) or not all(isinstance(v, dict) and 'step' in v for v in stopped.values()):
                raise ValueError('not probe rows')
        except (ValueError, TypeError, AttributeError) as err:
            raise StateError(f'{self.path}: its probes cannot be read ({err}); start the run again') from None
        trainer.start_probe, trainer.probe_rows = start, rows
        trainer.stopped.update(stopped)

    def start_of(self, key):
        """The training state to resume phase `key` from (None for any other phase, or without one): the replay ends
        there and this rank takes back its random state."""
        if not self.replaying or tuple(self.loaded['phase']) != tuple(key):
            return None
        state, self.loaded = self.loaded, None
        set_rng_state(state['rng'][0 if self.ranks is None else self.ranks.rank])
        return state['step']

    def step_done(self, trainer, key, step, steps, training):
        """After step `step` (1-based) of `steps` in phase `key`: every every-th and the last, rank 0 writes state.pt
        (every rank calls this: their random states are gathered)."""
        if not self.every or (step % self.every and step != steps):
            return
        rngs = [rng_state()] if self.ranks is None else self.ranks.gather(rng_state())
        if not self.main:
            return
        state = dict(version=VERSION, processes=self.size, phase=tuple(key), step=training(), rng=rngs,
            memo={k: [m.state_dict() for m in p.modules()] for k, p in trainer.memo.items()},
            bridges={k: candidates_to_file(v) for k, v in trainer.bridges.items()}, done=list(self.done),
            rows=json.dumps(dnnlib.util.json_safe(self.rows), default=float),
            probes=json.dumps(dnnlib.util.json_safe(dict(start=trainer.start_probe, phases=trainer.probe_rows)), default=float),
            stopped=dict(trainer.stopped), records=0 if self.log is None else len(self.log.records))
        with dnnlib.util.atomic_write(self.path, 'wb') as f:
            torch.save(state, f)

    def finished(self, group, row=None):
        """Group `group` is saved (and evaluated: its row)."""
        self.done.append(group)
        if row is not None:
            self.rows.append(row)

    @property
    def records(self):
        """stats.jsonl records the state counts (None without one)."""
        return None if self.loaded is None else self.loaded['records']

#----------------------------------------------------------------------------
