"""CPU benchmark of the FFHQ-512 generator: forward time, streaming vs per-chunk sigma throughput, peak RSS of a big cube."""

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

import click
import psutil
import torch

from eg3d_rlhf import cli
from eg3d_rlhf.generators.eg3d import TriPlaneField
from eg3d_rlhf.geometry.sigma import CubeGrid
from training.camera_utils import orbit_camera_label

#----------------------------------------------------------------------------

def build_generator(channel_base, channel_max):
    """FFHQ-512 TriPlaneGenerator (kwargs from the param spec), random init, eval mode, CPU."""
    return cli.ffhq512_structure(channel_base, channel_max).eval().requires_grad_(False)

def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out

def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # Linux reports KiB.

#----------------------------------------------------------------------------

def bench_forward(G, z, c, repeats):
    """(a) Median seconds of one full G forward (1 image, neural rendering resolution 64)."""
    with torch.no_grad():
        G(z, c, neural_rendering_resolution=64, noise_mode='const')     # Warm-up.
        times = [timed(lambda: G(z, c, neural_rendering_resolution=64, noise_mode='const'))[0] for _ in range(repeats)]
    return statistics.median(times), times

def bench_sigma(G, z, c, res, chunk):
    """(b) Points/s of the streaming field and of gen_samples' per-chunk G.sample, same grid and chunk."""
    grid = CubeGrid(res, cube_length=G.rendering_kwargs['box_warp'])
    def streaming():
        field = TriPlaneField.from_latents(G, z, c, truncation_psi=1, noise_mode='const')
        return field.sample_grid(grid, chunk=chunk)[0].flatten()
    def per_chunk():
        out = torch.empty(grid.num_points)
        with torch.no_grad():
            for s in range(0, grid.num_points, chunk):
                pts = grid.points(s, min(s + chunk, grid.num_points))[None]
                out[s : s + chunk] = G.sample(pts, torch.zeros_like(pts), z, c, truncation_psi=1, noise_mode='const')['sigma'][0, :, 0]
        return out
    t_stream, a = timed(streaming)
    t_chunk, b = timed(per_chunk)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), 'streaming and per-chunk sigma disagree'
    return grid.num_points / t_stream, grid.num_points / t_chunk, math.ceil(grid.num_points / chunk)

class RssPoller:
    """Highest resident set size seen by polling psutil every `interval` seconds in a background thread."""
    def __init__(self, interval=0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
    def _run(self):
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            time.sleep(self.interval)
    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self
    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

def measure_rss(channel_base, channel_max, res, chunk):
    """(c), run in a fresh process: RSS before, during (polled) and at peak (ru_maxrss) around streaming a res^3 cube."""
    G = build_generator(channel_base, channel_max)
    z, c = torch.randn([1, G.z_dim]), orbit_camera_label(G.rendering_kwargs)
    field = TriPlaneField.from_latents(G, z, c, noise_mode='const')
    resident = psutil.Process().memory_info().rss / 2**20
    with RssPoller() as poller:
        seconds, sigma = timed(lambda: field.sample_grid(CubeGrid(res), chunk=chunk))
    print(json.dumps(dict(resident_before_mib=resident, streaming_peak_mib=poller.peak / 2**20,
        process_peak_mib=peak_rss_mib(), output_mib=sigma.numel() * 4 / 2**20, seconds=seconds)))

#----------------------------------------------------------------------------

@click.command()
@click.option('--repeats', type=int, default=3, show_default=True, help='(a) timed G forwards (after one warm-up)')
@click.option('--sigma-res', type=int, default=64, show_default=True, help='(b) cube resolution for the throughput race')
@click.option('--chunk', type=int, default=32768, show_default=True, help='(b) points per chunk, both methods')
@click.option('--rss-res', type=int, default=512, show_default=True, help='(c) cube resolution streamed for peak RSS')
@click.option('--rss-chunk', type=int, default=2**18, show_default=True, help='(c) points per chunk')
@click.option('--channel-base', type=int, default=None, help='Shrink the network (default: the full FFHQ-512 32768)')
@click.option('--channel-max', type=int, default=None, help='With --channel-base (full: 512)')
@click.option('--threads', type=int, default=None, help='torch.set_num_threads (default: torch chooses)')
@click.option('--rss-child', is_flag=True, hidden=True)
def main(repeats, sigma_res, chunk, rss_res, rss_chunk, channel_base, channel_max, threads, rss_child):
    """Quick run: --repeats 1 --sigma-res 32 --chunk 8192 --rss-res 128 --channel-base 4096 --channel-max 128"""
    if threads is not None:
        torch.set_num_threads(threads)
    if rss_child:
        return measure_rss(channel_base, channel_max, rss_res, rss_chunk)
    G = build_generator(channel_base, channel_max)
    z, c = torch.randn([1, G.z_dim]), orbit_camera_label(G.rendering_kwargs)
    print(f'network: FFHQ-512 structure, channel_base {channel_base or 32768}, channel_max {channel_max or 512}, '
        f'random init, CPU, {torch.get_num_threads()} threads')

    median, times = bench_forward(G, z, c, repeats)
    print(f'(a) G forward, 1 image, neural rendering 64: median {median:.2f} s over {repeats} '
        f'({", ".join(f"{t:.2f}" for t in times)})')

    stream, per_chunk, chunks = bench_sigma(G, z, c, sigma_res, chunk)
    print(f'(b) sigma on a {sigma_res}^3 cube, chunk {chunk} ({chunks} chunks): streaming {stream:,.0f} pt/s, '
        f'per-chunk G.sample {per_chunk:,.0f} pt/s, speed-up x{stream / per_chunk:.1f}')

    cmd = [sys.executable, os.path.abspath(__file__), '--rss-child', '--rss-res', str(rss_res), '--rss-chunk',
        str(rss_chunk)] + ([] if channel_base is None else ['--channel-base', str(channel_base), '--channel-max',
        str(channel_max)]) + ([] if threads is None else ['--threads', str(threads)])
    child = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    print(f'(c) {rss_res}^3 cube, chunk {rss_chunk}, fresh subprocess: RSS {child["resident_before_mib"]:,.0f} MiB '
        f'before streaming (network + planes), at most {child["streaming_peak_mib"]:,.0f} MiB while streaming (psutil, '
        f'polled every 50 ms): +{child["streaming_peak_mib"] - child["resident_before_mib"]:,.0f} MiB, of which '
        f'{child["output_mib"]:,.0f} MiB is the output volume; process peak {child["process_peak_mib"]:,.0f} MiB '
        f'(ru_maxrss, includes building the planes); took {child["seconds"]:.1f} s')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
