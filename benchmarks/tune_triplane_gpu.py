"""Times the fused tri-plane decode's Triton kernels over launch settings at EG3D's sizes, to choose their defaults."""

import itertools

import click
import torch

#----------------------------------------------------------------------------
# EG3D's sizes: one sample's planes [1, 3, 256, 256, 32] (channels last), 64 hidden units, 2^20 random points in the
# box; sigma alone (1 output) and sigma with the 32 colour features (33). Each line: milliseconds per launch (CUDA
# events, mean of `repeats` after one warm-up launch that also compiles), or the error a launch raised (a setting
# that asks for more shared memory than the GPU has raises OutOfResources).

BLOCKS_FWD, WARPS, STAGES_FWD = (32, 64, 128), (4, 8), (1, 3)
BLOCKS_BWD, STAGES_BWD, PER_SM = (16, 32, 64), (1, 2), (2, 4, 8)


def mean_ms(fn, repeats):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def timed(label, fn, repeats):
    try:
        print(f'{label}: {mean_ms(fn, repeats):.3f} ms', flush=True)
    except Exception as err: # pylint: disable=broad-except
        print(f'{label}: {type(err).__name__}', flush=True)


@click.command()
@click.option('--points', type=click.IntRange(min=1), default=2**20, show_default=True, help='Points per launch')
@click.option('--repeats', type=click.IntRange(min=1), default=10, show_default=True, help='Timed launches (mean)')
def main(points, repeats):
    """Prints one line per (outputs, pass, block, warps, stages[, programs per SM]); the defaults in
    torch_utils/ops/triton_kernels/triplane_sigma.py are the fastest lines of an H100 (docs/guides/benchmarks.md)."""
    if not torch.cuda.is_available():
        raise click.ClickException('no CUDA device: tune_triplane_gpu.py times GPU kernels')
    import triton # pylint: disable=import-outside-toplevel
    from torch_utils.ops.triton_kernels import triplane_sigma as tk # pylint: disable=import-outside-toplevel
    fwd_kernel, bwd_kernel, pad = tk._decode_fwd, tk._decode_bwd, tk._pad # pylint: disable=protected-access
    dev = torch.device('cuda')
    torch.manual_seed(0)
    H, W, C, HD, M = 256, 256, 32, 64, points
    planes = torch.randn([1, 3, H, W, C], device=dev)
    pts = torch.rand([1, M, 3], device=dev) - 0.5
    w1, b1 = torch.randn([HD, C], device=dev) / 6, torch.randn([HD], device=dev)
    scale = torch.tensor([2.0], device=dev)
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    print(f'{torch.cuda.get_device_name(dev)}, torch {torch.__version__}, triton {triton.__version__}, {M} points')
    for O in (1, 33):
        w2, b2 = torch.randn([O, HD], device=dev) / 8, torch.randn([O], device=dev)
        CP, HP, OP = pad(C), pad(HD), pad(O)
        out, grad = torch.empty([1, M, O], device=dev), torch.randn([1, M, O], device=dev)
        for block, warps, stages in itertools.product(BLOCKS_FWD, WARPS, STAGES_FWD):
            fwd = lambda: fwd_kernel[(triton.cdiv(M, block),)](planes, pts, w1, b1, w2, b2, out, scale, M, M, H, W, C,
                HD, O, BLOCK_=block, CP=CP, HP=HP, OP=OP, num_warps=warps, num_stages=stages)
            timed(f'fwd O={O} BLOCK={block} warps={warps} stages={stages}', fwd, repeats)
        for block, warps, stages, per_sm in itertools.product(BLOCKS_BWD, WARPS, STAGES_BWD, PER_SM):
            blocks = triton.cdiv(M, block)
            programs = min(blocks, per_sm * sms)
            gplanes, gpoints = torch.zeros_like(planes), torch.zeros_like(pts)
            partials = [torch.zeros([programs, *shape], device=dev) for shape in ([HP, CP], [HP], [OP, HP], [OP])]
            bwd = lambda: bwd_kernel[(programs,)](grad, planes, pts, w1, b1, w2, gplanes, gpoints, *partials, scale, M,
                blocks, M, H, W, C, HD, O, WANT_PLANES=True, WANT_POINTS=True, BLOCK_=block, CP=CP, HP=HP, OP=OP,
                num_warps=warps, num_stages=stages)
            timed(f'bwd O={O} BLOCK={block} warps={warps} stages={stages} per_sm={per_sm}', bwd, max(1, repeats // 2))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
