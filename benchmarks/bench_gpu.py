"""GPU benchmark: the custom ops' Triton kernels against the reference path and NVIDIA's kernels, per op and end to end."""

import contextlib
import importlib
import importlib.util
import os
import statistics
import sys
import time

import click
import numpy as np
import torch

from eg3d_rlhf import cli
from eg3d_rlhf.geometry.sigma import CubeGrid
from torch_utils.ops import bias_act, filtered_lrelu, triplane_sigma, upfirdn2d
from training.camera_utils import orbit_camera_label
from gen_samples_sigma import register_loaded_plugins # (run as a script: its folder is on sys.path)

#----------------------------------------------------------------------------
# The three paths. 'ref': EG3D_RLHF_CUSTOM_OPS=0 (triton_kernels.available() reads it at every call) and the fused
# decode off; 'triton': custom ops on (CUDA tensors take the Triton kernels); 'nvidia': EG3D's ops, with their CUDA
# kernels, put in place of ours (the fused decode has no NVIDIA counterpart: reference there).

NV_OPS = ('bias_act', 'upfirdn2d', 'filtered_lrelu')


def load_nvidia_ops(checkout):
    """EG3D's torch_utils.ops modules from a checkout (CHECKOUT/eg3d/torch_utils or CHECKOUT/torch_utils), imported as
    the package `nvidia_torch_utils` beside ours; their plugins build with nvcc on first use."""
    root = next((p for p in (os.path.join(checkout, 'eg3d', 'torch_utils'), os.path.join(checkout, 'torch_utils'))
        if os.path.isfile(os.path.join(p, 'ops', 'bias_act.py'))), None)
    if root is None:
        raise click.ClickException(f'no EG3D torch_utils/ops/bias_act.py under {checkout}')
    spec = importlib.util.spec_from_file_location('nvidia_torch_utils', os.path.join(root, '__init__.py'),
        submodule_search_locations=[root])
    package = importlib.util.module_from_spec(spec)
    sys.modules['nvidia_torch_utils'] = package
    spec.loader.exec_module(package)
    # Their loader prints only "Failed!" at 'brief' (what happened under torch 2.11 / CUDA 13 on an H100): show the build.
    importlib.import_module('nvidia_torch_utils.custom_ops').verbosity = 'full'
    register_loaded_plugins()
    return {name: importlib.import_module(f'nvidia_torch_utils.ops.{name}') for name in NV_OPS}


@contextlib.contextmanager
def on_path(which, nvidia=None):
    """Run the block on one path: 'ref', 'triton' or 'nvidia' (needs load_nvidia_ops' modules)."""
    ours = {'bias_act': bias_act, 'upfirdn2d': upfirdn2d, 'filtered_lrelu': filtered_lrelu}
    saved_env, saved_enabled = os.environ.get('EG3D_RLHF_CUSTOM_OPS'), triplane_sigma.enabled
    saved_fns = {name: getattr(ours[name], name) for name in NV_OPS}
    os.environ['EG3D_RLHF_CUSTOM_OPS'] = '1' if which == 'triton' else '0'
    triplane_sigma.enabled = (which == 'triton')
    if which == 'nvidia':                       # Our networks call the ops through their modules' attributes.
        for name in NV_OPS:
            setattr(ours[name], name, getattr(nvidia[name], name))
    try:
        yield
    finally:
        for name in NV_OPS:
            setattr(ours[name], name, saved_fns[name])
        triplane_sigma.enabled = saved_enabled
        if saved_env is None:
            os.environ.pop('EG3D_RLHF_CUSTOM_OPS', None)
        else:
            os.environ['EG3D_RLHF_CUSTOM_OPS'] = saved_env


def median_ms(fn, repeats):
    """Median wall milliseconds of fn() (synchronised), after one warm-up call (which also compiles the kernels)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3

#----------------------------------------------------------------------------
# Cases: name -> (fn(which) to time, whether NVIDIA's kernels apply). Ops run forward + backward on EG3D's sizes.

def forward_backward(op, *inputs):
    def run():
        leaves = [t.detach().requires_grad_(True) for t in inputs]
        op(*leaves).float().square().sum().backward()
    return run


def op_cases(dev):
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=dev)
    x32, b32 = torch.randn([4, 512, 64, 64], device=dev), torch.randn([512], device=dev)
    x16, b16 = torch.randn([4, 128, 256, 256], device=dev).half(), torch.randn([128], device=dev).half()
    xu, xd = torch.randn([4, 256, 128, 128], device=dev), torch.randn([4, 256, 256, 256], device=dev)
    planes = torch.randn([1, 3, 32, 256, 256], device=dev)
    points = CubeGrid(128).points(0, 2**20, dev)[None]
    dec = _decoder(dev)
    def decode(planes, sigma_only=True):
        from training.volumetric_rendering.renderer import ImportanceRenderer # pylint: disable=import-outside-toplevel
        out = ImportanceRenderer().run_model(planes, dec, points, points, {'box_warp': 1.0}, sigma_only=sigma_only)
        return out['sigma'] if sigma_only else torch.cat([out['sigma'], out['rgb']], -1)
    lrelu = lambda x, b, clamp=None: bias_act.bias_act(x, b, act='lrelu', clamp=clamp)
    def lrelu_kernel(x, b):                         # float32 dispatch takes the reference (bias_act.triton_float32).
        saved, bias_act.triton_float32 = bias_act.triton_float32, True
        try:
            return lrelu(x, b)
        finally:
            bias_act.triton_float32 = saved
    flrelu = lambda x, b: filtered_lrelu.filtered_lrelu(x, f, f, b, up=2, down=2, padding=[3, 2, 3, 2], gain=np.sqrt(2))
    return {
        'bias_act lrelu [4,512,64,64] fp32':            (forward_backward(lrelu, x32, b32), True),
        'the same, Triton kernel (not dispatched)':      (forward_backward(lrelu_kernel, x32, b32), False),
        'bias_act lrelu clamp [4,128,256,256] fp16':    (forward_backward(lambda x, b: lrelu(x, b, 256), x16, b16), True),
        'upfirdn2d up 2 [4,256,128,128]':               (forward_backward(lambda x: upfirdn2d.upsample2d(x, f), xu), True),
        'upfirdn2d down 2 [4,256,256,256]':             (forward_backward(lambda x: upfirdn2d.downsample2d(x, f), xd), True),
        'filtered_lrelu up 2 down 2 [4,256,128,128]':   (forward_backward(flrelu, xu, b32[:256]), True),
        'triplane decode sigma, 2^20 pts':              (forward_backward(decode, planes), False),
        'triplane decode all 33, 2^20 pts':             (forward_backward(lambda p: decode(p, sigma_only=False), planes), False),
    }


def _decoder(dev):
    from training.triplane import OSGDecoder # pylint: disable=import-outside-toplevel
    torch.manual_seed(0)
    return OSGDecoder(32, {'decoder_lr_mul': 1, 'decoder_output_dim': 32}).to(dev)


def end_to_end_cases(dev, batch):
    """G forward (FFHQ-512 structure, random weights), sigma over whole 256^3 / 512^3 cubes, one reward-phase step."""
    from eg3d_rlhf.generators.eg3d import TriPlaneField # pylint: disable=import-outside-toplevel
    G = cli.ffhq512_structure().to(dev).eval().requires_grad_(False)
    z = torch.randn([batch, G.z_dim], device=dev)
    c = orbit_camera_label(G.rendering_kwargs, device=dev).expand(batch, -1)
    def forward():
        with torch.no_grad():
            G(z, c, noise_mode='const')
    def sigma(res):
        grid = CubeGrid(res, cube_length=G.rendering_kwargs['box_warp'])
        return lambda: TriPlaneField.from_latents(G, z[:1], c[:1]).sample_grid(grid, chunk=2**22)
    return {
        f'G forward, batch {batch}, fp16 layers on':  (forward, True),
        'sigma 256^3 (one latent)':                    (sigma(256), False),
        'sigma 512^3 (one latent)':                    (sigma(512), False),
        'reward-phase step (loss + backward)':         (reward_step(dev), True),
    }


def reward_step(dev):
    """One RewardPhase.loss + backward of the published recipe's settings (benchmarks/bench_published_step.py)."""
    import tempfile # pylint: disable=import-outside-toplevel
    from eg3d_rlhf.finetune.recipes import PAPER, reward_phase_settings # pylint: disable=import-outside-toplevel
    from eg3d_rlhf.finetune.reward_phase import RewardPhase # pylint: disable=import-outside-toplevel
    from eg3d_rlhf.rewards import build_reward # pylint: disable=import-outside-toplevel
    from eg3d_rlhf.rewards.bundle import KIND, published_spec # pylint: disable=import-outside-toplevel
    from eg3d_rlhf.rewards.checkpoint import save_reward # pylint: disable=import-outside-toplevel
    G = cli.ffhq512_structure().train().requires_grad_(True).to(dev)      # As bench_published_step.py builds it.
    with tempfile.TemporaryDirectory() as tmp:
        save_reward(os.path.join(tmp, 'reward.pt'), build_reward(KIND), KIND, published_spec())
        phase = RewardPhase(G, reward=KIND, reward_model=os.path.join(tmp, 'reward.pt'), reward_batch=1, **reward_phase_settings(PAPER))
    z, c = torch.randn([1, G.z_dim], device=dev), orbit_camera_label(G.rendering_kwargs, device=dev)
    def step():
        G.zero_grad(set_to_none=True)
        phase.loss(G, z, c)[0].backward()
    return step

#----------------------------------------------------------------------------

@click.command()
@click.option('--eg3d', 'eg3d_path', type=click.Path(exists=True, file_okay=False), help="EG3D checkout: NVIDIA's too")
@click.option('--repeats', type=click.IntRange(min=1), default=5, show_default=True, help='Timed calls (median)')
@click.option('--batch', type=click.IntRange(min=1), default=4, show_default=True, help='G forward batch')
@click.option('--skip-end-to-end', is_flag=True, help='Per-op rows only')
def main(eg3d_path, repeats, batch, skip_end_to_end):
    """Times each case on the reference path and on the Triton kernels (and on NVIDIA's CUDA kernels with --eg3d),
    forward + backward, and prints milliseconds with ratios reference / Triton and NVIDIA / Triton (> 1: Triton faster)."""
    if not torch.cuda.is_available():
        raise click.ClickException('no CUDA device: bench_gpu.py times GPU kernels, nothing to measure on this machine')
    if importlib.util.find_spec('triton') is None:
        raise click.ClickException('triton is not installed: pip install -e \'.[gpu]\' (triton==3.9.0)')
    dev = torch.device('cuda')
    torch.manual_seed(0)
    nvidia = load_nvidia_ops(eg3d_path) if eg3d_path else None
    cases = op_cases(dev)
    if not skip_end_to_end:
        cases.update(end_to_end_cases(dev, batch))
    print(f'{torch.cuda.get_device_name(dev)}, torch {torch.__version__}, median of {repeats} (after a warm-up call)')
    header = f'{"case":<46} {"reference ms":>12} {"triton ms":>10} {"ref/tri":>8}'
    print(header + (f' {"nvidia ms":>10} {"nv/tri":>7}' if nvidia else ''))
    for name, (fn, has_nvidia) in cases.items():
        ms = {}
        for which in ['ref', 'triton'] + (['nvidia'] if nvidia and has_nvidia else []):
            with on_path(which, nvidia):
                ms[which] = median_ms(fn, repeats)
        line = f'{name:<46} {ms["ref"]:12.2f} {ms["triton"]:10.2f} {ms["ref"] / ms["triton"]:8.2f}'
        if 'nvidia' in ms:
            line += f' {ms["nvidia"]:10.2f} {ms["nvidia"] / ms["triton"]:7.2f}'
        print(line, flush=True)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
