"""The base of every reward network: constructor kwargs kept as .config, the scoring MLP head, score() from features()."""

import inspect
import json

from torch import nn

from torch_utils import misc

#----------------------------------------------------------------------------

class _RecordsConfig(type):
    """Metaclass: once __init__ has run, .config holds every constructor argument (defaults filled in) in plain JSON
    types (tuples become lists), so a checkpoint stores it for torch.load(weights_only=True) and build_reward(kind,
    **config) rebuilds the same network."""

    def __call__(cls, *args, **kwargs):
        obj = super().__call__(*args, **kwargs)
        bound = inspect.signature(cls.__init__).bind(obj, *args, **kwargs)
        bound.apply_defaults()
        obj.config = json.loads(json.dumps(dict(list(bound.arguments.items())[1:])))
        return obj


class RewardNet(nn.Module, metaclass=_RecordsConfig):
    """A reward model on prepared inputs [N, ...] (contract.InputSpec.prepare of raw sigma): a subclass builds its
    trunk, calls init_head() last and defines features(x) -> [N, feature_dim]; score(x) -> [N] follows."""

    takes_reference = False     # Does it subtract a reference slab of the training bank (set_reference, --centre)?

    def init_head(self, feature_dim, hidden):
        """The scoring MLP, head = Linear(feature_dim, hidden), SiLU, Linear(hidden, 1); built after the trunk, so a
        seeded model starts from the same weights as before the base existed."""
        self.feature_dim = int(feature_dim)
        self.head = nn.Sequential(nn.Linear(self.feature_dim, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def features(self, x):
        """Prepared inputs [N, ...] -> global features [N, feature_dim]."""
        raise NotImplementedError

    def score_features(self, f):
        """Global features [N, feature_dim] -> rewards [N]."""
        misc.assert_shape(f, [None, self.feature_dim])
        return self.head(f)[:, 0]

    def output_bias(self):
        """The bias of the layer that gives the reward (fitting shifts it to centre the scores)."""
        return self.head[-1].bias

    def score(self, x):
        """Prepared inputs [N, ...] -> rewards [N]."""
        return self.score_features(self.features(x))

    def forward(self, x):
        return self.score(x)

#----------------------------------------------------------------------------
