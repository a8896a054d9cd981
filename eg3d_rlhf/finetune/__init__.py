"""How preferences change a generator: the GAN reward phase (reward, pairwise, consistency terms), its config, the panel; Flow-DPO and Circular-DPO."""

from .config import LOSS_MODES, RewardFinetuneConfig
from .reward_phase import DensityConsistency, PairwiseTerm, RewardPhase, RewardTerm
