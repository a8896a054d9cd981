"""Unpaired training's options: one config object with help text and validation, from which its train.py flags come."""

import dataclasses
import typing

from eg3d_rlhf.finetune import losses
from eg3d_rlhf.finetune.circular_config import HeldOutOptions
from eg3d_rlhf.finetune.options import ConfigError, MethodConfig, option

#----------------------------------------------------------------------------
# Each field is one setting of `python train.py --generator=flow --method=unpaired`. Fields named as Circular-DPO's
# (reward_model, eval_seeds, annotator, temperature, draw_batch, demo_annotator, eval_res) mean the same here.

STAGE_INDEX = dict(final=-1, structure=0)


@dataclasses.dataclass
class UnpairedConfig(HeldOutOptions, MethodConfig):
    ratings:        typing.Optional[str] = option(None, 'Ratings file of flow bank samples (tools/label.py rate\'s JSONL, its key beside it): the training data', metavar='JSONL')
    criterion:      str = option('overall', 'The rated criterion trained on: each sample\'s mean rating of it over its raters', metavar='NAME')
    unpaired_loss:  str = option('dro', 'dro: regress the implicit reward on the rating above a baseline per condition (DSO); kto: ratings above --good-above are good, the rest bad', choices=lambda: tuple(losses.UNPAIRED))
    unpaired_stage: str = option('final', 'The stage trained: final, or structure (the first)', choices=lambda: tuple(STAGE_INDEX))
    unpaired_steps: int = option(200, 'Adam steps', min=1)
    unpaired_batch: int = option(8, 'Rated samples per step', min=1)
    unpaired_lr:    float = option(1e-4, 'Adam learning rate of the stage (and of DRO\'s baselines)', min=0)
    unpaired_beta:  float = option(1000.0, 'beta of the implicit reward beta * (MSE_t(reference) - MSE_t(policy)), per value of the stage', above=0)
    good_above:     float = option(3.0, 'kto: a mean rating above this is good, else bad')
    reward_model:   typing.Optional[str] = option(None, 'Reward checkpoint scoring the evaluation\'s samples  [default: the bundled flow reward of --demo-annotator]', metavar='PT')

    def validate(self):
        if self.ratings is None:
            raise ConfigError('--ratings JSONL is needed: a ratings file of flow bank samples (tools/label.py rate)')
        self.check_annotators()
        if self.unpaired_loss != 'kto' and self.good_above != 3.0:
            raise ConfigError('--good-above splits ratings for --unpaired-loss=kto')

#----------------------------------------------------------------------------
