"""Methods that change a generator from preferences: their registry, configs and runners; reward phase, Flow-DPO, losses."""

from .config import LOSS_MODES, RewardFinetuneConfig
from .reward_phase import DensityConsistency, PairwiseTerm, RewardPhase, RewardTerm
