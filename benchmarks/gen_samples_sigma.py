"""The baseline of bench_extract.py: the sigma path of EG3D's gen_samples.py (--shapes) as one process on a pickle."""

# The steps follow NVIDIA's gen_samples.py: its imports, the pickle's G_ema, the frontal conditioning camera,
# create_samples' N^3 grid over the box, G.sample on chunks of max_batch points (each chunk maps z and runs the backbone
# again), the cube flipped on z, the outer int(30 N / 256) voxels set to -1000, and the volume written as an .mrc with
# mrcfile. The three images gen_samples renders before the shape are left out (extract_sigma renders none).
#
# Without --eg3d the modules are this repository's (run it with EG3D_RLHF_CUSTOM_OPS=0: NVIDIA's compiled ops are
# CUDA-only, their reference paths run on a CPU). With --eg3d CHECKOUT they are NVIDIA's own: CHECKOUT/eg3d comes first
# on PYTHONPATH and its gen_samples module is imported (its imports, legacy, camera_utils, create_samples, TriPlaneGenerator),
# so the pickle must hold their classes (bench_extract.py writes one in their tree). Their ops take the reference path
# for CPU tensors (the CUDA plugins are built only for CUDA tensors). gen_samples' --fov-deg is int-typed (its 18.837
# default reaches the camera as 18); --fov-deg here is a float, 18.837 as extract_sigma's, so both compute one cube.

import importlib
import os
import sys

import click
import numpy as np


def register_loaded_plugins():
    """Make torch.utils.cpp_extension.load put what it loads into sys.modules, as NVIDIA's custom_ops expects.

    Their get_plugin builds a plugin with load() and then imports it by name. An extension built against pybind11 3
    (torch 2.13 ships 3.0.4) initialises in several phases, and loading it from a file no longer registers it, so
    that import fails with ModuleNotFoundError after a good build. NVIDIA's files stay as they are; idempotent."""
    import torch.utils.cpp_extension as cpp_extension # pylint: disable=import-outside-toplevel
    load = cpp_extension.load
    if getattr(load, 'registers_modules', False):
        return

    def registering_load(*args, **kwargs):
        module = load(*args, **kwargs)
        if isinstance(module, type(sys)):
            sys.modules.setdefault(module.__name__, module)
        return module

    registering_load.registers_modules = True
    cpp_extension.load = registering_load


class OurSteps:
    """gen_samples' steps on this repository's modules."""

    def __init__(self):
        import mrcfile # pylint: disable=import-outside-toplevel
        import torch # pylint: disable=import-outside-toplevel
        from tqdm import tqdm # pylint: disable=import-outside-toplevel
        for name in ('PIL.Image', 'dnnlib'):                   # gen_samples imports them too (it also writes images).
            importlib.import_module(name)
        from training import legacy # pylint: disable=import-outside-toplevel
        from training.camera_utils import FOV_to_intrinsics, LookAtPoseSampler # pylint: disable=import-outside-toplevel
        self.torch, self.tqdm, self.mrcfile = torch, tqdm, mrcfile
        self.load = lambda f: legacy.load_network_pkl(f, trust=True)
        self.LookAtPoseSampler, self.FOV_to_intrinsics = LookAtPoseSampler, FOV_to_intrinsics

    @staticmethod
    def create_samples(N, voxel_origin, cube_length):
        """gen_samples' grid: N^3 points [1, N^3, 3] from -cube_length/2 in steps of cube_length / (N - 1), z fastest;
        as there, the two slower indices come from the flat index by float division without flooring (off the grid)."""
        import torch # pylint: disable=import-outside-toplevel
        assert list(voxel_origin) == [0, 0, 0]                  # What gen_samples passes: one origin for the 3 axes.
        origin, voxel = -cube_length / 2, cube_length / (N - 1)
        index = torch.arange(N ** 3)
        samples = torch.stack([((index.float() / N) / N) % N, (index.float() / N) % N, (index % N).float()], dim=1)
        return (samples * voxel + origin)[None], origin, voxel


def eg3d_root(checkout):
    """The folder of a NVlabs/eg3d checkout holding gen_samples.py (CHECKOUT/eg3d, or CHECKOUT itself)."""
    for root in (os.path.join(checkout, 'eg3d'), checkout):
        if os.path.isfile(os.path.join(root, 'gen_samples.py')):
            return os.path.abspath(root)
    raise click.ClickException(f'{checkout}: no gen_samples.py there or in its eg3d/ folder (a checkout of NVlabs/eg3d)')


class NvidiaSteps:
    """gen_samples' steps on NVIDIA's modules, imported from a checkout of NVlabs/eg3d."""

    def __init__(self, checkout):
        root = eg3d_root(checkout)
        hint = f'run with PYTHONPATH={root} (bench_extract.py does)'
        try:
            gen_samples = importlib.import_module('gen_samples')             # All of gen_samples' imports.
        except ImportError as err:
            raise click.ClickException(f'cannot import NVIDIA\'s gen_samples ({err}): {hint}') from None
        for name in ('gen_samples', 'legacy', 'dnnlib', 'training', 'torch_utils'):
            where = os.path.abspath(sys.modules[name].__file__)
            if not where.startswith(root + os.sep):
                raise click.ClickException(f'{name} was imported from {where}, not from {root}: {hint}')
        self.torch, self.tqdm, self.mrcfile = gen_samples.torch, gen_samples.tqdm, gen_samples.mrcfile
        self.load = lambda f: gen_samples.legacy.load_network_pkl(f)
        self.LookAtPoseSampler, self.FOV_to_intrinsics = gen_samples.LookAtPoseSampler, gen_samples.FOV_to_intrinsics
        self.create_samples = gen_samples.create_samples


@click.command()
@click.option('--network', 'network_pkl', required=True)
@click.option('--seed', type=int, default=0)
@click.option('--res', 'shape_res', type=int, default=512)
@click.option('--trunc', 'truncation_psi', type=float, default=1)
@click.option('--trunc-cutoff', 'truncation_cutoff', type=int, default=14)
@click.option('--fov-deg', type=float, default=18.837)
@click.option('--eg3d', 'checkout', type=click.Path(exists=True, file_okay=False), help="NVlabs/eg3d checkout: run NVIDIA's modules")
@click.option('--outdir', required=True)
def main(network_pkl, seed, shape_res, truncation_psi, truncation_cutoff, fov_deg, checkout, outdir):
    """Write OUTDIR/SEED.mrc, gen_samples' shape of one seed at --res."""
    steps = NvidiaSteps(checkout) if checkout else OurSteps()
    torch = steps.torch
    device = torch.device('cpu')
    with open(network_pkl, 'rb') as f:
        G = steps.load(f)['G_ema'].to(device)
    os.makedirs(outdir, exist_ok=True)
    intrinsics = steps.FOV_to_intrinsics(fov_deg, device=device)
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(device)
    cam_pivot = torch.tensor(G.rendering_kwargs.get('avg_camera_pivot', [0, 0, 0]), device=device)
    cam_radius = G.rendering_kwargs.get('avg_camera_radius', 2.7)
    pose = steps.LookAtPoseSampler.sample(np.pi / 2, np.pi / 2, cam_pivot, radius=cam_radius, device=device)
    conditioning_params = torch.cat([pose.reshape(-1, 16), intrinsics.reshape(-1, 9)], 1)
    max_batch = 1000000
    samples, _, _ = steps.create_samples(N=shape_res, voxel_origin=[0, 0, 0], cube_length=G.rendering_kwargs['box_warp'])
    samples = samples.to(device)
    sigmas = torch.zeros((samples.shape[0], samples.shape[1], 1), device=device)
    directions = torch.zeros((samples.shape[0], max_batch, 3), device=device)
    directions[..., -1] = -1
    head = 0
    with steps.tqdm(total=samples.shape[1]) as bar, torch.no_grad():
        while head < samples.shape[1]:
            torch.manual_seed(0)
            sigmas[:, head:head + max_batch] = G.sample(samples[:, head:head + max_batch],
                directions[:, :samples.shape[1] - head], z, conditioning_params, truncation_psi=truncation_psi,
                truncation_cutoff=truncation_cutoff, noise_mode='const')['sigma']
            head += max_batch
            bar.update(max_batch)
    sigmas = np.flip(sigmas.reshape((shape_res, shape_res, shape_res)).cpu().numpy(), 0)
    pad = int(30 * shape_res / 256)
    pad_value = -1000
    sigmas[:pad] = sigmas[-pad:] = pad_value
    sigmas[:, :pad] = sigmas[:, -pad:] = pad_value
    sigmas[:, :, :pad] = sigmas[:, :, -pad:] = pad_value
    with steps.mrcfile.new_mmap(os.path.join(outdir, f'{seed}.mrc'), overwrite=True, shape=sigmas.shape, mrc_mode=2) as mrc:
        mrc.data[:] = sigmas


if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
