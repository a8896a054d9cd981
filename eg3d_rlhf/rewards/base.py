"""The base of every reward network: constructor kwargs kept as .config, the scoring MLP head, score() from features()."""

import inspect
import json

import torch
from torch import nn

from eg3d_rlhf.rewards.contract import InputSpec
from torch_utils import misc

MAX_MEMBERS = 1024              # Ensemble members of one reward model (a damaged checkpoint may ask for 1e308).

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

    takes_reference = False     # Can it subtract a reference slab of the training bank (set_reference, --centre)?
    frozen_trunk = False        # Are its features fixed, so fitting computes them once and trains only the heads?

    @classmethod
    def uses_reference(cls, config):
        """Does a model of this config subtract a reference slab by default (--centre)?"""
        return cls.takes_reference

    @classmethod
    def default_input(cls, slab, config):
        """The input contract a model of this config is trained on for a bank whose slabs `slab` describes."""
        return InputSpec(slab=dict(slab))

    def init_head(self, feature_dim, hidden, members=1):
        """The scoring head: Linear(feature_dim, hidden), SiLU, Linear(hidden, 1), or Linear(feature_dim, 1) with
        hidden 0; members > 1 builds that many (an ensemble, scored by their mean, whose spread is the model's doubt).
        Built after the trunk, so a seeded model starts from the same weights as before the base existed."""
        if not 1 <= members <= MAX_MEMBERS:
            raise ValueError(f'members is {members!r}; expected an integer in [1, {MAX_MEMBERS}]')
        self.feature_dim, self.members = int(feature_dim), int(members)
        make = lambda: nn.Sequential(nn.Linear(self.feature_dim, hidden), nn.SiLU(), nn.Linear(hidden, 1)) if hidden \
            else nn.Linear(self.feature_dim, 1)
        if self.members == 1 and hidden:
            self.head = make()                                  # The one-member layout every checkpoint before had.
        else:
            self.heads = nn.ModuleList([make() for _ in range(self.members)])

    def features(self, x):
        """Prepared inputs [N, ...] -> global features [N, feature_dim]."""
        raise NotImplementedError

    def member_heads(self):
        """The head of each member: self.heads, or the one self.head."""
        return self.heads if hasattr(self, 'heads') else [self.head]

    def member_scores(self, f):
        """Global features [N, feature_dim] -> every member's rewards [N, members]."""
        misc.assert_shape(f, [None, self.feature_dim])
        return torch.cat([h(f) for h in self.member_heads()], dim=1)

    def score_features(self, f):
        """Global features [N, feature_dim] -> rewards [N] (the members' mean)."""
        return self.member_scores(f).mean(dim=1)

    def output_biases(self):
        """The bias of the layer that gives each member's reward, [members] tensors (fitting centres each)."""
        return [h[-1].bias if isinstance(h, nn.Sequential) else h.bias for h in self.member_heads()]

    def score(self, x):
        """Prepared inputs [N, ...] -> rewards [N]."""
        return self.score_features(self.features(x))

    def forward(self, x):
        return self.score(x)

#----------------------------------------------------------------------------
