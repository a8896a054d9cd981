"""Multi-process training plumbing: process groups (torchrun or single-node spawn), the data sampler, gradient sync."""

import contextlib
import os
import tempfile

import numpy as np
import torch

#----------------------------------------------------------------------------
# Launching. One process per GPU on CUDA; on CPU each "GPU" is one process. NCCL on CUDA, gloo on CPU.

def backend_for(device_type):
    """The torch.distributed backend for 'cuda' or 'cpu' processes."""
    return 'nccl' if device_type == 'cuda' else 'gloo'


def torchrun_env():
    """(rank, local_rank, world_size) when this process was started by torchrun (env:// variables set), else None."""
    if 'WORLD_SIZE' not in os.environ or 'RANK' not in os.environ:
        return None
    return int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', os.environ['RANK'])), int(os.environ['WORLD_SIZE'])


def init_torchrun(device_type):
    """Join the process group that torchrun set up (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE)."""
    rank, local_rank, world_size = torchrun_env()
    if device_type == 'cuda':
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group(backend=backend_for(device_type), init_method='env://', rank=rank, world_size=world_size)
    return rank, local_rank, world_size


def spawn(fn, num_processes, device_type, args=()):
    """Run fn(rank, *args) in num_processes processes on this node, in one process group (file:// rendezvous).

    With one process, fn runs here and no group is created. Processes start with the 'spawn' method, so fn and
    args must be picklable (a module-level function).
    """
    if num_processes == 1:
        fn(0, *args)
        return
    with tempfile.TemporaryDirectory() as temp_dir:
        init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
        torch.multiprocessing.spawn(fn=_spawned, args=(fn, num_processes, device_type, init_file, args), nprocs=num_processes)


def _spawned(rank, fn, num_processes, device_type, init_file, args):
    if device_type == 'cuda':
        torch.cuda.set_device(rank)
    else: # CPU processes share the cores instead of each starting one thread per core.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_processes))
    init_method = 'file:///' + init_file.replace('\\', '/') if os.name == 'nt' else f'file://{init_file}'
    torch.distributed.init_process_group(backend=backend_for(device_type), init_method=init_method, rank=rank, world_size=num_processes)
    with process_group_session():
        fn(rank, *args)


@contextlib.contextmanager
def process_group_session():
    """Run the body, then leave the process group together: a barrier (when the body succeeded), then destroy it. A
    rank that exits while a peer's gloo transport still reads from it can make that peer throw outside Python, which
    aborts the peer (SIGABRT; about once in 20 two-process CPU runs without the barrier)."""
    try:
        yield
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def is_initialized():
    return torch.distributed.is_available() and torch.distributed.is_initialized()

#----------------------------------------------------------------------------

class InfiniteSampler(torch.utils.data.Sampler):
    """Endless dataset indices for one rank: a seeded shuffle, then a sliding window of random swaps, so the order
    keeps changing without epochs. Rank r takes every num_replicas-th index, starting at r (EG3D's sampler)."""

    def __init__(self,
        dataset,                    # The dataset (only its length is used).
        rank            = 0,        # This process's rank.
        num_replicas    = 1,        # Number of processes reading the dataset.
        shuffle         = True,     # Shuffle the order (and keep changing it)?
        seed            = 0,        # Seed of the order.
        window_size     = 0.5,      # Swap window as a fraction of the dataset size.
        start           = 0,        # Indices of this rank to skip: those a resumed run's first part already used.
    ):
        assert len(dataset) > 0
        assert num_replicas > 0 and 0 <= rank < num_replicas
        assert 0 <= window_size <= 1
        super().__init__()
        self.dataset_size = len(dataset)
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size
        self.start = int(start)

    def __iter__(self):
        order = np.arange(self.dataset_size)
        rnd = None
        window = 0
        if self.shuffle:
            rnd = np.random.RandomState(self.seed)
            rnd.shuffle(order)
            window = int(np.rint(order.size * self.window_size))

        step, skipped = 0, 0
        while True:
            i = step % order.size
            if step % self.num_replicas == self.rank:
                if skipped < self.start:
                    skipped += 1
                else:
                    yield order[i]
            if window >= 2:
                j = (i - rnd.randint(window)) % order.size
                order[i], order[j] = order[j], order[i]
            step += 1

#----------------------------------------------------------------------------

@torch.no_grad()
def broadcast_module(module, src=0):
    """Copy every parameter and buffer of `module` from rank `src` to all ranks."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.numel() > 0:
            torch.distributed.broadcast(tensor, src=src)


@torch.no_grad()
def sync_gradients(module, num_gpus):
    """Average the gradients of `module` over ranks (one flat all-reduce) and scrub nan/inf from them.

    Every rank must hold gradients for the same parameters. nan becomes 0, +inf 1e5 and -inf -1e5, as in EG3D.
    """
    params = [p for p in module.parameters() if p.numel() > 0 and p.grad is not None]
    if len(params) == 0:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    if num_gpus > 1:
        torch.distributed.all_reduce(flat)
        flat /= num_gpus
    torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
    for p, grad in zip(params, flat.split([p.numel() for p in params])):
        p.grad = grad.reshape(p.shape)

#----------------------------------------------------------------------------
