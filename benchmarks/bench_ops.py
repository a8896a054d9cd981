"""CPU benchmark of torch_utils.ops: reference vs compiled kernel per op, forward and forward+backward, in one process."""

import statistics
import threading
import time

import click
import numpy as np
import psutil
import torch

from eg3d_rlhf import cli
from eg3d_rlhf.geometry.sigma import CubeGrid
from torch_utils import custom_ops
from torch_utils.ops import bias_act
from torch_utils.ops import filtered_lrelu
from torch_utils.ops import triplane_sigma
from torch_utils.ops import upfirdn2d

#----------------------------------------------------------------------------
# Timing helpers shared by the sections.

def median_ms(fn, repeats):
    """Median wall time of `repeats` calls of fn() in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def forward_and_backward(op, inputs):
    """(forward-only, forward+backward) callables for `op(*inputs, impl=...)`; gradients flow to the inputs that require them."""
    def fwd(impl):
        with torch.no_grad():
            op(*inputs, impl=impl)
    def both(impl):
        leaves = [t.detach().requires_grad_(True) if t.requires_grad else t for t in inputs]
        op(*leaves, impl=impl).square().sum().backward()
    return fwd, both


def compare(name, op, inputs, repeats):
    """Rows [name, pass, reference ms, compiled ms] for forward and forward+backward."""
    fwd, both = forward_and_backward(op, inputs)
    rows = []
    for label, fn in [('forward', fwd), ('forward+backward', both)]:
        ref = median_ms(lambda: fn('ref'), repeats)
        cpp = median_ms(lambda: fn('cpp'), repeats)
        rows.append([name, label, ref, cpp])
    return rows

#----------------------------------------------------------------------------
# Sections: one function per op, taking (scale, repeats) and returning rows. `scale` divides the spatial size.

def bench_bias_act(scale, repeats):
    """lrelu with bias on a StyleGAN-sized feature map."""
    x = torch.randn([4, 512, 64 // scale, 64 // scale]).requires_grad_(True)
    b = torch.randn([512]).requires_grad_(True)
    op = lambda x, b, impl: bias_act.bias_act(x, b, act='lrelu', impl=impl)
    return compare(f'bias_act lrelu {list(x.shape)}', op, [x, b], repeats)


def bench_upfirdn2d(scale, repeats):
    """EG3D's [1, 3, 3, 1] resampling filter: upsample 2 and downsample 2."""
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x_up = torch.randn([4, 256, 64 // scale, 64 // scale]).requires_grad_(True)
    x_down = torch.randn([4, 256, 128 // scale, 128 // scale]).requires_grad_(True)
    up = lambda x, impl: upfirdn2d.upsample2d(x, f, up=2, impl=impl)
    down = lambda x, impl: upfirdn2d.downsample2d(x, f, down=2, impl=impl)
    return (compare(f'upfirdn2d up 2 {list(x_up.shape)}', up, [x_up], repeats) +
        compare(f'upfirdn2d down 2 {list(x_down.shape)}', down, [x_down], repeats))


def bench_filtered_lrelu(scale, repeats):
    """StyleGAN3-style layer: bias, up 2, lrelu, down 2, same output size."""
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([4, 256, 64 // scale, 64 // scale]).requires_grad_(True)
    b = torch.randn([256]).requires_grad_(True)
    op = lambda x, b, impl: filtered_lrelu.filtered_lrelu(x, f, f, b, up=2, down=2, padding=[3, 2, 3, 2], gain=np.sqrt(2), slope=0.2, impl=impl)
    return compare(f'filtered_lrelu up 2 down 2 {list(x.shape)}', op, [x, b], repeats)


#----------------------------------------------------------------------------
# The fused tri-plane decode (torch_utils.ops.triplane_sigma): the op on EG3D-sized planes, and streaming sigma of the
# FFHQ-512 structure (random weights) over whole cubes, reference (grid_sample + decoder) vs compiled.

def _decoder(channels=32):
    from training.triplane import OSGDecoder # pylint: disable=import-outside-toplevel
    torch.manual_seed(0)
    return OSGDecoder(channels, {'decoder_lr_mul': 1, 'decoder_output_dim': 32})


def bench_triplane_decode(scale, repeats):
    """One sample's planes [3, 32, 256, 256], 2^18 points of a 128^3 cube: sigma alone, sigma with colour, and sigma
    with colour where a quarter of the hidden units sit far below zero."""
    from training.volumetric_rendering.renderer import ImportanceRenderer # pylint: disable=import-outside-toplevel
    size = 256 // scale
    planes = torch.randn([1, 3, 32, size, size]).requires_grad_(True)
    points = CubeGrid(128).points(0, 2**18 // scale**2)[None]
    renderer, dec = ImportanceRenderer(), _decoder()
    def op(planes, impl, sigma_only=True):
        triplane_sigma.enabled = (impl == 'cpp')
        out = renderer.run_model(planes, dec, points, points, {'box_warp': 1.0}, sigma_only=sigma_only)
        return out['sigma'] if sigma_only else torch.cat([out['sigma'], out['rgb']], -1)
    name = f'triplane decode {list(planes.shape)} x {points.shape[1]} pts'
    rows = compare(name + ' sigma', op, [planes], repeats)
    rows += compare(name + ' all 33', lambda planes, impl: op(planes, impl, sigma_only=False), [planes], repeats)
    with torch.no_grad():                   # Trained decoders' far-negative units: softplus' derivative a denormal float.
        dec.net[0].bias[:16] = -95.0
    rows += compare(name + ' all 33, 16 units at -95', lambda planes, impl: op(planes, impl, sigma_only=False), [planes],
        repeats)
    triplane_sigma.enabled = True
    return rows

def _ffhq_field():
    """A TriPlaneField of the FFHQ-512 structure (the param spec's G kwargs, random weights) for one latent, and G."""
    from eg3d_rlhf.generators.eg3d import TriPlaneField # pylint: disable=import-outside-toplevel
    from training.camera_utils import orbit_camera_label # pylint: disable=import-outside-toplevel
    G = cli.ffhq512_structure().eval().requires_grad_(False)
    return TriPlaneField.from_latents(G, torch.randn([1, G.z_dim]), orbit_camera_label(G.rendering_kwargs)), G


def peak_rss_during(fn):
    """(fn's result, seconds, highest resident set size in MiB seen while it ran: psutil polled every 20 ms)."""
    proc, peak, done = psutil.Process(), [0], threading.Event()
    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        out = fn()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        thread.join()
    return out, seconds, max(peak[0], proc.memory_info().rss) / 2**20


def bench_sigma_stream(resolutions, chunk):
    """Rows [N, reference Mpts/s, compiled Mpts/s, reference peak MiB over resident, compiled peak MiB over resident,
    max |difference| / max |sigma|] of streaming the FFHQ-512 structure's sigma over whole N^3 cubes."""
    field, G = _ffhq_field()
    rows = []
    for res in resolutions:
        grid = CubeGrid(res, cube_length=G.rendering_kwargs['box_warp'])
        result = {}
        for impl in ('ref', 'cpp'):
            triplane_sigma.enabled = (impl == 'cpp')
            field.sample(grid.points(0, 4096), chunk=chunk)                         # Warm-up (and the planes' copy).
            resident = psutil.Process().memory_info().rss / 2**20
            sigma, seconds, peak = peak_rss_during(lambda: field.sample_grid(grid, chunk=chunk))
            result[impl] = (sigma, grid.num_points / seconds / 1e6, peak - resident)
            del sigma
        (ref, ref_rate, ref_mib), (cpp, cpp_rate, cpp_mib) = result.pop('ref'), result.pop('cpp')
        error = ((cpp - ref).abs().max() / ref.abs().max()).item()
        rows.append([res, ref_rate, cpp_rate, ref_mib, cpp_mib, error])
        del ref, cpp
    triplane_sigma.enabled = True
    return rows


# name -> (section function, callable that loads the compiled plugin and says whether it is available).
SECTIONS = {
    'bias_act':         (bench_bias_act,        bias_act._init),           # pylint: disable=protected-access
    'upfirdn2d':        (bench_upfirdn2d,       upfirdn2d._init),          # pylint: disable=protected-access
    'filtered_lrelu':   (bench_filtered_lrelu,  filtered_lrelu._init),     # pylint: disable=protected-access
    'triplane_decode':  (bench_triplane_decode, triplane_sigma._init),     # pylint: disable=protected-access
    'sigma_stream':     (None,                  triplane_sigma._init),     # pylint: disable=protected-access
}

#----------------------------------------------------------------------------

@click.command()
@click.option('--only', type=click.Choice(list(SECTIONS)), multiple=True, help='Sections to run (repeatable; default all)')
@click.option('--repeats', type=click.IntRange(min=1), default=5, show_default=True, help='Timed calls per measurement (median)')
@click.option('--threads', type=click.IntRange(min=1), default=2, show_default=True, help='torch CPU threads')
@click.option('--scale', type=click.Choice(['1', '2', '4', '8']), default='1', show_default=True, help='Divide spatial sizes by this (quick runs)')
@click.option('--stream-res', type=click.Choice(['64', '128', '256', '512']), multiple=True, default=['128', '256'],
    show_default=True, help='sigma_stream: cube resolutions (repeatable; divided by --scale)')
@click.option('--stream-chunk', type=click.IntRange(min=1024), default=2**18, show_default=True, help='sigma_stream: points per chunk')
@click.option('--dry-run', is_flag=True, help='List the sections that would run and exit')
def main(only, repeats, threads, scale, stream_res, stream_chunk, dry_run):
    """Times each op's reference path (impl='ref') and its compiled CPU kernel (impl='cpp') and prints the ratio
    reference / compiled (> 1: compiled is faster); sigma_stream prints points per second and peak memory of both. Builds the plugins first if they are not cached (about 20 s each)."""
    names = list(only) or list(SECTIONS)
    if dry_run:
        print('would run: ' + ', '.join(names))
        return
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    custom_ops.verbosity = 'none'
    for name in names:
        if not SECTIONS[name][1]():
            raise click.ClickException(f'the compiled "{name}" plugin is unavailable (EG3D_RLHF_CUSTOM_OPS=0, or its build '
                'failed: see the warning above); nothing to compare')

    print(f'{threads} threads, median of {repeats} calls, spatial sizes / {scale}')
    print(f'{"op":<46} {"pass":<17} {"reference ms":>12} {"compiled ms":>12} {"ratio":>6}')
    for name in names:
        for op, label, ref, cpp in (SECTIONS[name][0](int(scale), repeats) if SECTIONS[name][0] else []):
            print(f'{op:<46} {label:<17} {ref:12.2f} {cpp:12.2f} {ref / cpp:6.2f}')
    if 'sigma_stream' in names:
        print(f'\nsigma of the FFHQ-512 structure (random weights) streamed over whole N^3 cubes, {stream_chunk} points a chunk')
        print(f'{"N":>5} {"reference Mpts/s":>17} {"compiled Mpts/s":>16} {"ratio":>6} {"ref peak MiB":>13} '
            f'{"compiled peak MiB":>18} {"max rel diff":>13}')
        for res, ref, cpp, ref_mib, cpp_mib, error in bench_sigma_stream([int(r) // int(scale) for r in stream_res], stream_chunk):
            print(f'{res:>5} {ref:17.2f} {cpp:16.2f} {cpp / ref:6.2f} {ref_mib:13.0f} {cpp_mib:18.0f} {error:13.1e}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
