"""Build a sample bank: per seed, the raw sigma slab, an RGB render, shaded previews from three views and meta.json."""

import os
import shutil

import click
from tqdm import tqdm

from dnnlib.util import WriteError
from eg3d_rlhf.cli import (OUT_DIR, FINITE, NETWORK_HELP, conditions_option, device_option, load_generator,
    mesh_convention_option, network_family, network_keys, network_path, one_line_errors, parse_range, pick_device)
from eg3d_rlhf.data.bank import BankError, BankWriter, is_finished, passes
from eg3d_rlhf.generators import registry
from eg3d_rlhf.generators.base import sample_id
from eg3d_rlhf.shards import Ranks, ShardError

#----------------------------------------------------------------------------

FLOW_BATCH = 8                  # Default ids per pass of a flow generator (a sample's bits do not depend on it).


#----------------------------------------------------------------------------

@click.command()
@click.option('--network', 'network_pkl', metavar='PKL|PT|bundled|bundled-flow', default='bundled', show_default=True,
    help=NETWORK_HELP)
@click.option('--trust-pickle', is_flag=True, help='Confirm you trust PKL: loading a pickle runs code stored in it')
@click.option('--seeds', type=parse_range, required=True, metavar='LIST', help="Seeds, e.g. '0-999'")
@conditions_option
@click.option('--trunc', 'truncation_psi', type=FINITE, default=0.7, show_default=True, help='Truncation psi (EG3D)')
@click.option('--trunc-cutoff', 'truncation_cutoff', type=int, default=14, show_default=True,
    help='Truncation cutoff (EG3D)')
@click.option('--res', 'resolution', type=click.IntRange(min=16), default=256, show_default=True,
    help='Cube resolution N whose face slab is sampled (256 gives the published 128x141x129)')
@click.option('--dtype', type=click.Choice(['float16', 'float32']), default='float16', show_default=True, help='Slab storage type')
@click.option('--level', type=FINITE, default=10, show_default=True, help='Raw sigma level drawn in the previews')
@click.option('--preview-res', type=click.IntRange(min=16), default=192, show_default=True, help='Preview size in pixels')
@click.option('--batch', type=click.IntRange(min=1), default=None, metavar='N',
    help=f'Flow generators: ids drawn per network pass, batch-invariantly (a sample\'s bits do not depend on N; '
    f'default {FLOW_BATCH})')
@mesh_convention_option
@click.option('--outdir', type=OUT_DIR, required=True, metavar='BANK', help='Bank folder (created; finished samples are kept)')
@click.option('--dry-run', is_flag=True, help='Print what would be done; load and write nothing')
@device_option
def main(network_pkl, trust_pickle, seeds, conditions, truncation_psi, truncation_cutoff, resolution, dtype, level, preview_res,
        batch, mesh_convention, outdir, dry_run, device_name):
    """Write BANK/<id>/{sigma_slab.npy, image.png, preview_front.png, preview_three_quarter.png,
    preview_profile.png, meta.json} for each seed (id seedNNNNNN), or each seed under each condition of a flow
    generator (id cCC-seedNNNNNN). EG3D samples come from gen_samples' frontal conditioning camera with constant
    noise, flow samples from their ids' noise seeds, --batch ids a pass in batch-invariant passes (an id's bits are
    the same alone or in any batch, so a resumed bank matches one drawn in one go). Previews show the slab as
    sampled (--mesh-convention=ours) or with the published border's voxels that fall inside it (published; at N=256
    the front 5 z-layers). Samples whose meta.json exists are skipped, so an interrupted run resumes; a bank made by
    another network or with other settings is refused. Under torchrun each process writes its share of the ids (every
    N-th pass) into the same folder: the files are those of a one-process run, and a rerun after any process died
    finishes the bank.

    \b
    python tools/sample_bank.py --seeds 0-999 --trunc 0.7 --res 128 --outdir out/bank
    python tools/sample_bank.py --network bundled-flow --seeds 0-124 --res 128 --outdir out/flow-bank
    torchrun --nproc-per-node 2 tools/sample_bank.py --seeds 0-999 --res 128 --outdir out/bank
    """
    path = network_path(network_pkl, trust_pickle)
    family, takers = network_family(path), [f for f in registry.FAMILIES.values() if 'invariant' in f.options]
    if batch is not None and family not in takers:
        raise click.UsageError(f'--batch is for {" and ".join(f.files for f in takers)}; '
            f'{path} is {family.description}')
    batch = (batch or FLOW_BATCH) if family in takers else 1
    with one_line_errors(ShardError):
        ranks = Ranks()
    device = ranks.device(pick_device(device_name))
    keys = network_keys(path, seeds, conditions)
    # Passes of all keys, then this rank's share: fixed by the keys alone, so a rerun's shares are today's.
    mine = [(condition, [s for s in chunk if not is_finished(outdir, sample_id(s, condition))])
        for condition, chunk in ranks.share(passes(keys, batch))]
    mine = [(condition, chunk) for condition, chunk in mine if chunk]
    todo = sum(len(chunk) for _, chunk in mine)
    done = sum(is_finished(outdir, sample_id(*k)) for k in keys)
    where = f' ({ranks.describe()})' if ranks.size > 1 else ''
    if dry_run:
        print(f'would load {path} on {device} and write {todo} samples{where} ({done} already done) '
            f'to {outdir}: slab of the {resolution}^3 grid as {dtype}, previews {preview_res} px ({mesh_convention} mesh '
            f'convention)' + (f', {batch} ids per pass' if family in takers else ''))
        return
    generator = load_generator(path, device, draw_batch=batch, invariant=True, truncation_psi=truncation_psi,
        truncation_cutoff=truncation_cutoff)
    writer = BankWriter(outdir, generator, resolution, dtype=dtype, level=level, preview_res=preview_res,
        convention=mesh_convention)
    fresh = not os.path.exists(outdir)
    try:
        if ranks.main:                              # Rank 0 creates bank.json; the others then check it.
            writer.open()
        ranks.barrier()
        if not ranks.main:
            writer.open()
        with tqdm(total=todo, desc=f'bank{where}', unit='sample', position=ranks.local) as bar:
            for condition, chunk in mine:
                for _ in writer.write_pass(chunk, condition):
                    bar.update()
    except BankError as err:                        # Finished samples stay; a rerun resumes after them.
        raise click.ClickException(str(err))
    except WriteError:                              # A full disk, say: a bank this run began and never filled goes.
        if fresh and ranks.main and not any(is_finished(outdir, sample_id(*k)) for k in keys):
            shutil.rmtree(outdir, ignore_errors=True)
        raise
    ranks.barrier()
    if ranks.main:
        written = sum(is_finished(outdir, sample_id(*k)) for k in keys) - done
        print(f'{outdir}: {written} samples written, {done} were already there'
            + (f' ({ranks.size} processes)' if ranks.size > 1 else ''))
    ranks.close()

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
