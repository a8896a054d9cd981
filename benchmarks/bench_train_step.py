"""One GAN step of the bundled EG3D generator on the CPU: bfloat16 convolutions (--cpu-bf16) against float32."""

import json
import statistics
import time

import click
import torch

from eg3d_rlhf.synthetic import demo
from torch_utils.ops import conv2d_gradfix
from training import legacy

#----------------------------------------------------------------------------

def networks():
    """G and D of the bundled demo checkpoint, rebuilt with this repository's code, trainable."""
    with open(demo.GENERATOR, 'rb') as f:
        data = legacy.load_network_pkl(f, trust=True)          # Bundled with the repository.
    return [legacy.rebuild_network(data[name]).train().requires_grad_(True) for name in ('G', 'D')]


def step(G, D, z, c):
    """A generator pass and D's loss on it, then R1's double backward on the same images (EG3D's costly parts)."""
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
    img = G(z, c, noise_mode='const')
    D(img, c).sum().backward()
    real = {k: v.detach().requires_grad_(True) for k, v in img.items() if k in ('image', 'image_raw')}
    with conv2d_gradfix.no_weight_gradients():
        grads = torch.autograd.grad([D(real, c).sum()], [real['image'], real['image_raw']], create_graph=True)
    sum(g.square().sum() for g in grads).backward()


@click.command()
@click.option('--reps', type=click.IntRange(min=2), default=8, show_default=True, help='Steps of each kind (the first of each is a warm-up)')
@click.option('--batch', type=click.IntRange(min=1), default=4, show_default=True, help='Images per step')
@click.option('--threads', type=click.IntRange(min=1), default=2, show_default=True, help='torch CPU threads')
def main(reps, batch, threads):
    """Time float32 and bfloat16 steps taking turns in this process; print each kind's median seconds and the median of
    the pairs' ratios (float32 / bfloat16, > 1: bfloat16 is faster) as one JSON line. bfloat16 without the CPU's
    bfloat16 instructions is emulated: `native` says which."""
    torch.set_num_threads(threads)
    conv2d_gradfix.enabled = True
    G, D = networks()
    torch.manual_seed(0)
    z, c = torch.randn(batch, G.z_dim), torch.zeros(batch, G.c_dim)
    seconds = {False: [], True: []}
    for rep in range(reps):
        for low in (False, True):
            start = time.perf_counter()
            with conv2d_gradfix.bfloat16_on_cpu(low):
                step(G, D, z, c)
            if rep:
                seconds[low].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(seconds[False], seconds[True])]
    print(json.dumps(dict(native=conv2d_gradfix.native_bfloat16(), batch=batch, threads=threads, steps=reps - 1,
        float32_s=round(statistics.median(seconds[False]), 4), bfloat16_s=round(statistics.median(seconds[True]), 4),
        ratio=round(statistics.median(ratios), 3))))


if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
