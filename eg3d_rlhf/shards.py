"""Processes of a torchrun job: each rank's share of the work, barriers, gathered results and summed gradients."""

import datetime
import os

import torch

#----------------------------------------------------------------------------
# torchrun (torch.distributed.run) starts one process per rank with RANK, WORLD_SIZE and LOCAL_RANK set; a plain
# `python tools/x.py` has none of them and is rank 0 of 1. The tools split their work by ids, deterministically from
# the whole list, so any rank's share does not depend on timing, and a rerun after a crash finds the same shares
# minus what is finished. Control messages (barriers, gathered results: small Python objects) go through gloo, which
# runs on every machine; the work itself stays on each rank's own device. A job that sums CUDA tensors (a trainer's
# gradients) asks for Ranks(cuda=True): its group then sends CPU tensors through gloo and CUDA tensors through NCCL.

TIMEOUT = datetime.timedelta(hours=6)   # How long a rank waits at a barrier for slower ranks (a big bank's share).


class ShardError(ValueError):
    """The torchrun environment of this process is not usable."""


def _env_int(name, default):
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ShardError(f'environment variable {name}={text!r} is not an integer; run under torchrun or unset it') from None


class Ranks:
    """This process's place in the job: `rank` of `size` (0 of 1 outside torchrun), `local` its rank on its machine."""

    def __init__(self, cuda=False):
        self.rank = _env_int('RANK', 0)
        self.size = _env_int('WORLD_SIZE', 1)
        self.local = _env_int('LOCAL_RANK', self.rank)
        if self.size < 1 or not 0 <= self.rank < self.size:
            raise ShardError(f'RANK={self.rank} does not lie in WORLD_SIZE={self.size}; run under torchrun or unset both')
        if self.size > 1 and not torch.distributed.is_initialized():
            if cuda:
                torch.cuda.set_device(self.local % max(1, torch.cuda.device_count()))
            torch.distributed.init_process_group('cpu:gloo,cuda:nccl' if cuda else 'gloo', timeout=TIMEOUT)

    @property
    def main(self):
        """Rank 0: the one that prints summaries and writes gathered results."""
        return self.rank == 0

    def share(self, items):
        """Every size-th item from this rank's: a fixed split of a fixed list."""
        return list(items)[self.rank :: self.size]

    def share_chunks(self, items, chunk):
        """This rank's chunks of `chunk` consecutive items (every size-th chunk), so each chunk holds the same items it
        holds in a one-process run (batched work gives the same bits)."""
        items = list(items)
        chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
        return [c for c in chunks[self.rank :: self.size]]

    def barrier(self):
        if self.size > 1:
            torch.distributed.barrier()

    def gather(self, value):
        """[every rank's value] in rank order on rank 0 (None elsewhere); [value] in a one-process run."""
        if self.size == 1:
            return [value]
        out = [None] * self.size if self.main else None
        torch.distributed.gather_object(value, out, dst=0)
        return out

    def all_gather(self, value):
        """[every rank's value] in rank order on every rank; [value] in a one-process run."""
        if self.size == 1:
            return [value]
        out = [None] * self.size
        torch.distributed.all_gather_object(out, value)
        return out

    def broadcast(self, value):
        """Rank 0's value on every rank (the others' `value` is ignored)."""
        if self.size == 1:
            return value
        box = [value if self.main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    @torch.no_grad()
    def sum_gradients(self, params):
        """Replace each parameter's gradient by its sum over the ranks (one flat all-reduce; a parameter without a
        gradient counts as zeros, so every rank sends the same layout). Nothing happens in a one-process run."""
        params = [p for p in params if p.numel() > 0]
        if self.size == 1 or not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        torch.distributed.all_reduce(flat)
        for p, grad in zip(params, flat.split([p.numel() for p in params])):
            p.grad = grad.reshape(p.shape)

    def sum(self, tensor):
        """The tensor summed over the ranks (a new tensor; itself in a one-process run)."""
        if self.size == 1:
            return tensor
        tensor = tensor.clone()
        torch.distributed.all_reduce(tensor)
        return tensor

    def device(self, device):
        """A rank's CUDA device (cuda:LOCAL_RANK) when `device` is CUDA without an index; other devices unchanged."""
        if device.type == 'cuda' and device.index is None and self.size > 1:
            return torch.device('cuda', self.local % max(1, torch.cuda.device_count()))
        return device

    def describe(self):
        return f'rank {self.rank} of {self.size}' if self.size > 1 else ''

    def close(self):
        if self.size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def finish(self, work):
        """work()'s result; then the ranks leave together (a gloo peer may still be reading) and the group closes. A
        rank whose work raises closes at once."""
        try:
            result = work()
        except BaseException:
            self.close()
            raise
        self.barrier()
        self.close()
        return result

#----------------------------------------------------------------------------
