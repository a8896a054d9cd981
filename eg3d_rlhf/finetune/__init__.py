"""Methods that change a generator from preferences: their registry, configs and runners; reward phase, Flow-DPO, losses."""

import importlib

# The names below are imported on first use (PEP 562), so a tool that needs one helper of this package (a run folder,
# an option) does not import the reward models with it.
NAMES = dict(LOSS_MODES='config', RewardFinetuneConfig='config', DensityConsistency='reward_phase',     # name -> module.
    PairwiseTerm='reward_phase', RewardPhase='reward_phase', RewardTerm='reward_phase')


def __getattr__(name):
    if name in NAMES:
        return getattr(importlib.import_module(f'{__name__}.{NAMES[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
