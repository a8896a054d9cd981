"""How a tuned flow model's held-out samples rate against its base's, as the simulated raters would rate them."""

import json
import os

import click
import numpy as np
import scipy.stats
from tqdm import tqdm

import dnnlib
from eg3d_rlhf.analysis import sim_raters
from eg3d_rlhf.cli import family_options
from eg3d_rlhf.data.bank import BankError
from eg3d_rlhf.synthetic.family import Family

#----------------------------------------------------------------------------


def change(base, tuned):
    """{criterion: mean change, better, worse, Wilcoxon p} of two {id: ratings} over the same ids, paired by id."""
    ids = sorted(base)
    found = {}
    for name in base[ids[0]]:
        d = np.array([tuned[i][name] - base[i][name] for i in ids])
        p = float(scipy.stats.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
        found[name] = dict(base=float(np.mean([base[i][name] for i in ids])), tuned=float(np.mean([tuned[i][name]
            for i in ids])), change=float(d.mean()), better=int((d > 0).sum()), worse=int((d < 0).sum()), wilcoxon_p=p)
    return found


@click.command()
@click.option('--base', required=True, metavar='DIR', help='Bank of the base model\'s held-out samples (tools/sample_bank.py)')
@click.option('--tuned', required=True, metavar='DIR', help='Bank of the tuned model\'s samples of the same seeds and conditions')
@family_options
@click.option('--out', metavar='JSON', help='Also write the table here (refused when it exists, unless --force)')
@click.option('--force', is_flag=True, help='Replace an existing --out')
def main(base, tuned, family_seed, build_spread, family_heads, out, force):
    """Rate every sample of two banks of the same ids on the paper's five criteria as the simulated raters of
    tools/play_ratings.py would on average (no noise, no leniency), and print the tuned minus the base per criterion,
    paired by id: mean change, ids better and worse, Wilcoxon signed-rank p. For a run trained from simulated
    raters' ratings (train.py --method=unpaired): did the rated criterion improve on samples it never saw?

    \b
    python tools/sample_bank.py --network bundled-flow --seeds 6200-6207 --res 64 --outdir out/heldout-base
    python tools/sample_bank.py --network RUN/flow-unpaired.safetensors --seeds 6200-6207 --res 64 --outdir out/heldout-tuned
    python tools/rated_change.py --base out/heldout-base --tuned out/heldout-tuned
    """
    if out and os.path.exists(out) and not force:
        raise click.UsageError(f'{out} exists; pass --force to replace it')
    family = Family(seed=family_seed, build_spread=build_spread, heads=family_heads)
    try:
        with tqdm(desc='rated', unit='sample') as bar:
            rated = [sim_raters.bank_ratings(root, family, progress=bar.update) for root in (base, tuned)]
    except (BankError, OSError, ValueError) as err:
        raise click.UsageError(str(err).splitlines()[0]) from None
    if not rated[0] or set(rated[0]) != set(rated[1]):
        raise click.UsageError(f'{base} and {tuned}: not the same sample ids; draw both banks with the same --seeds')
    table = change(*rated)
    print(f'{len(rated[0])} held-out ids, tuned minus base (family {family.describe()}):')
    for name, row in table.items():
        print(f'  {name:22s} {row["base"]:.3f} -> {row["tuned"]:.3f}  {row["change"]:+.3f}  better {row["better"]}, '
            f'worse {row["worse"]}, Wilcoxon p {row["wilcoxon_p"]:.2g}')
    if out:
        with dnnlib.util.atomic_write(out, 'w', encoding='utf-8') as f:
            json.dump(dict(base=os.path.abspath(base), tuned=os.path.abspath(tuned), ids=len(rated[0]),
                criteria=table), f, indent=1)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
