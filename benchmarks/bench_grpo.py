"""CPU benchmark of Flow-GRPO iterations on the bundled flow model: the full SDE against MixGRPO windows, per stage set."""

import statistics
import time

import click
import torch

from eg3d_rlhf.finetune.grpo import FlowGRPO, GRPOSettings
from eg3d_rlhf.generators import registry
from eg3d_rlhf.synthetic import demo

#----------------------------------------------------------------------------
# One iteration draws a group per condition (every stage's steps: one velocity pass each, no gradients), scores it,
# and trains on the SDE steps of the trained stages (a pass with gradients and its backward each). A window of W of
# the K steps leaves the drawing as it is and trains on W steps instead of K. The reward is the mean raw sigma of each
# asset: the same cheap function in every configuration, so the times are the method's alone (a reward model adds
# the same seconds to each). Configurations run interleaved, `repeats` rounds, after one untimed iteration each; the
# table gives the median seconds per iteration and the ratio to the full SDE of the same stages.

CONFIGS = {                                 # name: (stages trained, SDE window per stage or None)
    'both, full SDE':       ((0, 1), None),
    'both, window 2':       ((0, 1), 2),
    'final, full SDE':      ((1,), None),
    'final, window 2':      ((1,), 2),
}


def trainer(pipeline, trained, window, group, steps):
    settings = GRPOSettings(group_size=group, steps=steps, trained=trained, window=window, lr=1e-5)
    return FlowGRPO(pipeline.frozen_copy(), lambda sigma, cond: sigma.mean(dim=(1, 2, 3)), settings)


@click.command()
@click.option('--group', type=click.IntRange(min=2), default=4, show_default=True, help='Samples per condition (G)')
@click.option('--steps', type=click.IntRange(min=3), default=8, show_default=True, help='Sampling steps per stage')
@click.option('--conditions', type=click.IntRange(min=1), help='Conditions per iteration  [default: all of the model\'s]')
@click.option('--repeats', type=click.IntRange(min=1), default=3, show_default=True, help='Timed iterations of each configuration, interleaved')
@click.option('--threads', type=click.IntRange(min=1), default=2, show_default=True, help='torch CPU threads')
def main(group, steps, conditions, repeats, threads):
    """Seconds per Flow-GRPO iteration of the bundled flow model, each configuration against the full SDE of the same
    stages in this process.

    \b
    python benchmarks/bench_grpo.py --repeats 3
    """
    torch.set_num_threads(threads)
    generator = registry.family_of_file(demo.FLOW_GENERATOR).load(demo.FLOW_GENERATOR, 'cpu')
    for module in generator.pipeline.modules():
        module.train().requires_grad_(True)
    conds = list(range(generator.conditions or 1))[:conditions] if generator.conditions else [None]
    trainers = {name: trainer(generator.pipeline, *CONFIGS[name], group, steps) for name in CONFIGS}
    times = {name: [] for name in CONFIGS}
    for r in range(repeats + 1):
        for name, t in trainers.items():
            seeds = [list(range(100 * r, 100 * r + group))] * len(conds)
            start = time.perf_counter()
            t.step(conds, seeds)
            if r:                                                      # The first round warms up.
                times[name].append(time.perf_counter() - start)
    print(f'Flow-GRPO on the bundled flow model: {len(conds)} conditions x {group} samples, {steps} steps per stage, '
        f'{threads} threads, CPU, {repeats} timed iterations each (median)')
    print(f'{"configuration":<17} {"s/iteration":>11} {"x full SDE":>11}')
    for name in CONFIGS:
        base = 'both, full SDE' if name.startswith('both') else 'final, full SDE'
        seconds = statistics.median(times[name])
        print(f'{name:<17} {seconds:11.2f} {statistics.median(times[base]) / seconds:10.2f}x')


if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
