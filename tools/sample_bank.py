"""Build a sample bank: per seed, the raw sigma slab, an RGB render, shaded previews from three views and meta.json."""

import os
import sys

import click
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # Run from anywhere.

from eg3d_rlhf.data import bank  # noqa: E402
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.data.preferences import seed_id                                           # noqa: E402
from eg3d_rlhf.geometry.sigma import SigmaField, SlabCrop, slab_grid                         # noqa: E402
from eg3d_rlhf.cli import file_sha256, load_generator, network_path, parse_range, pick_device, seed_latent  # noqa: E402
from training.camera_utils import orbit_camera_label                                # noqa: E402

#----------------------------------------------------------------------------

def write_sample(G, folder, seed, grid, c, truncation_psi, truncation_cutoff, level, dtype, preview_res, meta):
    """Every file of one sample; meta.json last, atomically, so an interrupted sample is redone on resume."""
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(seed)                                         # The renderer's stratified ray samples.
    with torch.no_grad():
        ws = G.mapping(seed_latent(G, seed).to(c.device), c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        image = G.synthesis(ws, c, noise_mode='const')['image'][0]
    sigma = SigmaField(G, ws, noise_mode='const').sample_grid(grid)[0].cpu().numpy()
    with open(os.path.join(folder, bank.SLAB_FILE), 'wb') as f:
        np.save(f, sigma.astype(dtype))
    preview.save_picture(preview.rgb_picture(image), os.path.join(folder, bank.IMAGE_FILE))
    for view, picture in preview.render_views(sigma, grid, level=level, resolution=preview_res).items():
        preview.save_picture(picture, os.path.join(folder, bank.preview_file(view)))
    bank.write_json(os.path.join(folder, bank.META_FILE), meta)

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', 'network_pkl', metavar='PKL|bundled', default='bundled', show_default=True,
    help='Network pickle; bundled = checkpoints/synthetic-heads64.pkl')
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust PKL: loading a pickle runs code stored in it')
@click.option('--seeds', type=parse_range, required=True, metavar='LIST', help="Seeds, e.g. '0-999'")
@click.option('--trunc', 'truncation_psi', type=float, default=0.7, show_default=True, help='Truncation psi')
@click.option('--trunc-cutoff', 'truncation_cutoff', type=int, default=14, show_default=True, help='Truncation cutoff')
@click.option('--res', 'resolution', type=click.IntRange(min=16), default=256, show_default=True,
    help='Cube resolution N whose face slab is sampled (256 gives the published 128x141x129)')
@click.option('--dtype', type=click.Choice(['float16', 'float32']), default='float16', show_default=True, help='Slab storage type')
@click.option('--level', type=float, default=10, show_default=True, help='Raw sigma level drawn in the previews')
@click.option('--preview-res', type=click.IntRange(min=16), default=192, show_default=True, help='Preview size in pixels')
@click.option('--outdir', required=True, metavar='BANK', help='Bank folder (created; finished samples are kept)')
@click.option('--dry-run', is_flag=True, help='Print what would be done; load and write nothing')
@click.option('--device', 'device_name', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
def main(network_pkl, trust_pickle, seeds, truncation_psi, truncation_cutoff, resolution, dtype, level, preview_res,
        outdir, dry_run, device_name):
    """Write BANK/seedNNNNNN/{sigma_slab.npy, image.png, preview_front.png, preview_three_quarter.png,
    preview_profile.png, meta.json} for each seed, from gen_samples' frontal conditioning camera with constant noise.
    Samples whose meta.json exists are skipped, so an interrupted run resumes; a bank made by another network or
    with other settings is refused.

    \b
    python tools/sample_bank.py --seeds 0-999 --trunc 0.7 --res 128 --outdir out/bank
    """
    path = network_path(network_pkl, trust_pickle)
    device = pick_device(device_name)
    todo = [s for s in seeds if not os.path.isfile(os.path.join(outdir, seed_id(s), bank.META_FILE))]
    if dry_run:
        print(f'would load {path} on {device} and write {len(todo)} samples ({len(seeds) - len(todo)} already done) '
            f'to {outdir}: slab of the {resolution}^3 grid as {dtype}, psi {truncation_psi}, previews {preview_res} px')
        return

    crop = SlabCrop()
    G = load_generator(path, device)                    # First: a clear error for a missing or unreadable pickle.
    digest = file_sha256(path)
    cube_length = float(G.rendering_kwargs['box_warp'])
    grid = slab_grid(resolution, cube_length=cube_length, crop=crop)
    c = orbit_camera_label(G.rendering_kwargs, device=device)
    slab = dict(resolution=resolution, cube_length=cube_length, crop=crop.__dict__, start=list(grid.start),
        stop=list(grid.stop), shape=list(grid.shape), dtype=dtype, order='xyz', flipped=False)
    settings = dict(network=os.path.abspath(path), network_sha256=digest, truncation_psi=truncation_psi,
        truncation_cutoff=truncation_cutoff, noise_mode='const', camera=dict(c=c[0].tolist(), yaw_deg=90.0,
        pitch_deg=90.0, fov_deg=18.837, note="gen_samples' frontal conditioning camera"), slab=slab, preview_level=level,
        preview_res=preview_res)
    bank_json = os.path.join(outdir, bank.BANK_FILE)
    if os.path.isfile(bank_json):
        old = bank.Bank.read_settings(outdir)
        changed = [k for k in ('network_sha256', 'truncation_psi', 'truncation_cutoff', 'slab', 'preview_level', 'preview_res')
            if old.get(k) != settings[k]]
        if changed:
            raise click.ClickException(f'{outdir} was made with other {", ".join(changed)}; use a new --outdir')
    os.makedirs(outdir, exist_ok=True)
    bank.write_json(bank_json, settings)

    for seed in tqdm(todo, desc='bank', unit='sample'):
        meta = dict(id=seed_id(seed), seed=seed, **settings)
        write_sample(G, os.path.join(outdir, seed_id(seed)), seed, grid, c, truncation_psi, truncation_cutoff, level,
            np.dtype(dtype), preview_res, meta)
    print(f'{outdir}: {len(todo)} samples written, {len(seeds) - len(todo)} were already there')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
