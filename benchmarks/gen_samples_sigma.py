"""The baseline of bench_extract.py: the sigma path of EG3D's gen_samples.py (--shapes) as one process on a pickle."""

# The steps follow NVIDIA's gen_samples.py as documented in the EG3D repository: the same imports, the pickle's G_ema,
# the frontal conditioning camera, create_samples' N^3 grid over the box, G.sample on chunks of max_batch points
# (each chunk maps z and runs the backbone again), the cube flipped on z, the outer int(30 N / 256) voxels set to
# -1000, and the volume written as an .mrc with mrcfile. Run it with EG3D_RLHF_CUSTOM_OPS=0 for NVIDIA's code on a CPU
# (its compiled ops are CUDA-only; their reference paths run on a CPU).

import os

import click
import mrcfile
import numpy as np
import PIL.Image # pylint: disable=unused-import  # gen_samples imports it (it also writes images).
import torch
from tqdm import tqdm

import dnnlib # pylint: disable=unused-import
from training import legacy
from training.camera_utils import orbit_camera_label


def create_samples(N, cube_length):
    """gen_samples' grid: N^3 points [1, N^3, 3] from -cube_length/2 in steps of cube_length / (N - 1), z fastest; as
    there, the two slower indices come from the flat index by float division without flooring (off the grid)."""
    origin, voxel = -cube_length / 2, cube_length / (N - 1)
    index = torch.arange(N ** 3)
    samples = torch.stack([((index.float() / N) / N) % N, (index.float() / N) % N, (index % N).float()], dim=1)
    return (samples * voxel + origin)[None]


@click.command()
@click.option('--network', 'network_pkl', required=True)
@click.option('--seed', type=int, default=0)
@click.option('--res', 'shape_res', type=int, default=512)
@click.option('--trunc', 'truncation_psi', type=float, default=1)
@click.option('--trunc-cutoff', 'truncation_cutoff', type=int, default=14)
@click.option('--outdir', required=True)
def main(network_pkl, seed, shape_res, truncation_psi, truncation_cutoff, outdir):
    device = torch.device('cpu')
    with open(network_pkl, 'rb') as f:
        G = legacy.load_network_pkl(f, trust=True)['G_ema'].to(device)
    os.makedirs(outdir, exist_ok=True)
    c = orbit_camera_label(G.rendering_kwargs, fov_degrees=18.837, device=device)     # gen_samples' frontal camera.
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(device)
    max_batch = 1000000
    samples = create_samples(shape_res, G.rendering_kwargs['box_warp']).to(device)
    sigmas = torch.zeros((samples.shape[0], samples.shape[1], 1), device=device)
    directions = torch.zeros((samples.shape[0], max_batch, 3), device=device)
    directions[..., -1] = -1
    head = 0
    with tqdm(total=samples.shape[1]) as bar, torch.no_grad():
        while head < samples.shape[1]:
            torch.manual_seed(0)
            end = min(head + max_batch, samples.shape[1])
            sigmas[:, head:end] = G.sample(samples[:, head:end], directions[:, :end - head], z, c,
                truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, noise_mode='const')['sigma']
            bar.update(end - head)
            head = end
    sigmas = np.flip(sigmas.reshape((shape_res, shape_res, shape_res)).cpu().numpy(), 0)
    pad = int(30 * shape_res / 256)
    pad_value = -1000
    sigmas[:pad] = sigmas[-pad:] = pad_value
    sigmas[:, :pad] = sigmas[:, -pad:] = pad_value
    sigmas[:, :, :pad] = sigmas[:, :, -pad:] = pad_value
    with mrcfile.new_mmap(os.path.join(outdir, f'{seed}.mrc'), overwrite=True, shape=sigmas.shape, mrc_mode=2) as mrc:
        mrc.data[:] = sigmas


if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
