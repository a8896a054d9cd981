"""CPU benchmark of torch_utils.ops: reference vs compiled kernel per op, forward and forward+backward, in one process."""

import statistics
import time

import click
import numpy as np
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act
from torch_utils.ops import filtered_lrelu
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


# name -> (section function, callable that loads the compiled plugin and says whether it is available).
SECTIONS = {
    'bias_act':         (bench_bias_act,        bias_act._init),           # pylint: disable=protected-access
    'upfirdn2d':        (bench_upfirdn2d,       upfirdn2d._init),          # pylint: disable=protected-access
    'filtered_lrelu':   (bench_filtered_lrelu,  filtered_lrelu._init),     # pylint: disable=protected-access
}

#----------------------------------------------------------------------------

@click.command()
@click.option('--only', type=click.Choice(list(SECTIONS)), multiple=True, help='Sections to run (repeatable; default all)')
@click.option('--repeats', type=click.IntRange(min=1), default=5, show_default=True, help='Timed calls per measurement (median)')
@click.option('--threads', type=click.IntRange(min=1), default=2, show_default=True, help='torch CPU threads')
@click.option('--scale', type=click.Choice(['1', '2', '4', '8']), default='1', show_default=True, help='Divide spatial sizes by this (quick runs)')
@click.option('--dry-run', is_flag=True, help='List the sections that would run and exit')
def main(only, repeats, threads, scale, dry_run):
    """Times each op's reference path (impl='ref') and its compiled CPU kernel (impl='cpp') and prints the ratio
    reference / compiled (> 1: compiled is faster). Builds the plugins first if they are not cached (about a minute each)."""
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
        for op, label, ref, cpp in SECTIONS[name][0](int(scale), repeats):
            print(f'{op:<46} {label:<17} {ref:12.2f} {cpp:12.2f} {ref / cpp:6.2f}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
