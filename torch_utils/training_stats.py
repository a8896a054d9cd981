"""Scalar statistics reported anywhere during training and collected (summed across ranks) at tick boundaries.

`report(name, value)` adds the elements of `value` to a named accumulator; a `Collector` later reads every
accumulator whose name matches its regex, all-reducing the moments across `torch.distributed` ranks first,
and exposes count / mean / std per name. Same API as EG3D's `torch_utils.training_stats`.
"""

import re

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------

_num_moments    = 3             # [count, sum, sum of squares]
_reduce_dtype   = torch.float32 # Accumulators while reporting.
_counter_dtype  = torch.float64 # Accumulators while syncing (more range for long runs).
_rank           = 0             # This process's rank, set by init_multiprocessing().
_sync_device    = None          # Device for the all-reduce (None = single process, no sync).
_sync_called    = False         # Has _sync() run? (init_multiprocessing must come first.)
_counters       = dict()        # name -> device -> running moments since the last _sync()
_cumulative     = dict()        # name -> moments accumulated over all syncs

#----------------------------------------------------------------------------

def init_multiprocessing(rank, sync_device):
    """Call once per process before reporting when training on several processes.

    sync_device: a device that torch.distributed can all-reduce on (the rank's GPU for NCCL, cpu for gloo);
    None disables syncing.
    """
    global _rank, _sync_device
    assert not _sync_called, 'init_multiprocessing() must be called before the first Collector.update()'
    _rank = rank
    _sync_device = sync_device


@torch.no_grad()
def report(name, value):
    """Add every element of `value` (number, sequence or tensor) to statistic `name`; returns `value` unchanged."""
    if name not in _counters:
        _counters[name] = dict()
    elems = torch.as_tensor(value)
    if elems.numel() == 0:
        return value
    elems = elems.detach().flatten().to(_reduce_dtype)
    moments = torch.stack([torch.ones_like(elems).sum(), elems.sum(), elems.square().sum()])
    assert moments.ndim == 1 and moments.shape[0] == _num_moments
    moments = moments.to(_counter_dtype)
    device = moments.device
    if device not in _counters[name]:
        _counters[name][device] = torch.zeros_like(moments)
    _counters[name][device].add_(moments)
    return value


def report0(name, value):
    """Like report(), but only rank 0 contributes (the others count nothing)."""
    report(name, value if _rank == 0 else [])
    return value

#----------------------------------------------------------------------------

class Collector:
    """Reads the accumulated statistics whose names match `regex`; call update() once per tick."""

    def __init__(self,
        regex           = '.*',     # Names to collect.
        keep_previous   = True,     # Keep a statistic's last value when a tick saw no reports of it?
    ):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._cumulative = dict()
        self._moments = dict()
        self.update()
        self._moments.clear()

    def names(self):
        """Names of matching statistics reported so far."""
        return [name for name in _counters if self._regex.fullmatch(name)]

    def update(self):
        """Sync across ranks and compute the moments reported since the previous update()."""
        if not self._keep_previous:
            self._moments.clear()
        for name, cumulative in _sync(self.names()):
            if name not in self._cumulative:
                self._cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
            delta = cumulative - self._cumulative[name]
            self._cumulative[name].copy_(cumulative)
            if float(delta[0]) != 0:
                self._moments[name] = delta

    def _get_delta(self, name):
        assert self._regex.fullmatch(name)
        if name not in self._moments:
            self._moments[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        return self._moments[name]

    def num(self, name):
        """How many scalars were reported to `name` in the last interval."""
        return int(self._get_delta(name)[0])

    def mean(self, name):
        """Mean of the last interval (nan when empty)."""
        delta = self._get_delta(name)
        if int(delta[0]) == 0:
            return float('nan')
        return float(delta[1] / delta[0])

    def std(self, name):
        """Standard deviation of the last interval (nan when empty)."""
        delta = self._get_delta(name)
        if int(delta[0]) == 0 or not np.isfinite(float(delta[1])):
            return float('nan')
        if int(delta[0]) == 1:
            return 0.0
        mean = float(delta[1] / delta[0])
        raw_var = float(delta[2] / delta[0])
        return np.sqrt(max(raw_var - np.square(mean), 0))

    def as_dict(self):
        """{name: EasyDict(num, mean, std)} for the last interval (what EG3D writes to stats.jsonl)."""
        return {name: dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name)) for name in self.names()}

    def __getitem__(self, name):
        return self.mean(name)

#----------------------------------------------------------------------------

def _sync(names):
    """Fold this process's new reports into the cumulative moments, all-reduced across ranks; yields (name, moments)."""
    global _sync_called
    if len(names) == 0:
        return []
    _sync_called = True

    deltas = []
    device = _sync_device if _sync_device is not None else torch.device('cpu')
    for name in names:
        delta = torch.zeros([_num_moments], dtype=_counter_dtype, device=device)
        for counter in _counters[name].values():
            delta.add_(counter.to(device))
            counter.copy_(torch.zeros_like(counter))
        deltas.append(delta)
    deltas = torch.stack(deltas)

    if _sync_device is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(deltas)

    deltas = deltas.cpu()
    for idx, name in enumerate(names):
        if name not in _cumulative:
            _cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        _cumulative[name].add_(deltas[idx])
    return [(name, _cumulative[name]) for name in names]
