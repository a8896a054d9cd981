"""One reward-phase step of the FFHQ-512 generator with the published sigma-unet reward on the full slab: time, memory."""

import json
import os
import resource
import tempfile
import time

import click
import psutil
import torch

from eg3d_rlhf import cli
from eg3d_rlhf.finetune.recipes import PAPER, reward_phase_settings
from eg3d_rlhf.finetune.reward_phase import RewardPhase
from eg3d_rlhf.rewards import build_reward
from eg3d_rlhf.rewards.bundle import KIND, published_spec
from eg3d_rlhf.rewards.checkpoint import save_reward
from training.camera_utils import orbit_camera_label


# The published recipe's reward-phase settings: --recipe=paper's values (eg3d_rlhf/finetune/recipes.py) of the fields
# RewardPhase takes (weight 10 on -clip(r, -10, 10), samples at psi 1 (cutoff 14), the density anchor x 0.01: L1 to
# the frozen G_ema on a 64^3 grid over the whole box at psi 0.7, summed over the batch).
RECIPE = reward_phase_settings(PAPER)

#----------------------------------------------------------------------------

def build_generator(device):
    """FFHQ-512 TriPlaneGenerator (EG3D's G_init_kwargs from the param spec), random init, trainable."""
    return cli.ffhq512_structure().train().requires_grad_(True).to(device)


def peak_mib(device):
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024                 # Linux reports KiB.


@click.command()
@click.option('--batch', type=click.IntRange(min=1), default=1, show_default=True, help='Samples in the reward pass')
@click.option('--threads', type=click.IntRange(min=1), default=2, show_default=True, help='torch CPU threads')
@click.option('--device', default='cpu', show_default=True, help='cpu or cuda')
@click.option('--recompute', is_flag=True, help='Gradient checkpointing of the slab decoder passes')
@click.option('--dry-run', is_flag=True, help='Print the settings and stop')
def main(batch, threads, device, recompute, dry_run):
    """Build G (random weights) and a random published-size reward (179 tensors), then time one RewardPhase.loss +
    backward, the reward term on the 128x141x129 slab. Prints wall and CPU seconds (CPU seconds stay meaningful on a
    shared machine) and peak memory (RSS on CPU, allocated on CUDA) as one JSON line."""
    options = dict(RECIPE)
    settings = dict(batch=batch, threads=threads, device=device, recompute=recompute, options=options)
    if dry_run:
        print(json.dumps(settings))
        return
    torch.set_num_threads(threads)
    device = torch.device(device)
    G = build_generator(device)
    torch.manual_seed(1)
    reward = build_reward(KIND)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'reward.pt')
        save_reward(path, reward, KIND, published_spec())
        phase = RewardPhase(G, reward=KIND, reward_model=path, reward_batch=batch, reward_recompute=recompute, **options)
    z = torch.randn([batch, G.z_dim], device=device)
    c = orbit_camera_label(G.rendering_kwargs, device=device).expand(batch, -1)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    before = psutil.Process().memory_info().rss / 2**20
    start, cpu = time.perf_counter(), time.process_time()
    total, parts = phase.loss(G, z, c)
    total.backward()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu       # CPU seconds: all threads, own process.
    grads = sum(int(p.grad is not None and bool(p.grad.abs().sum() > 0)) for p in G.parameters())
    print(json.dumps(dict(settings, seconds=round(seconds, 2), cpu_seconds=round(cpu, 2), rss_before_mib=round(before), peak_mib=round(peak_mib(device)),
        reward=[round(float(r), 4) for r in parts['reward']], loss=round(float(total.detach()), 4), params_with_grad=grads)))


if __name__ == '__main__':
    main()
