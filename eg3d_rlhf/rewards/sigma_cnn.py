"""The `sigma` reward: fixed level-set features of the slab, or a learned 3D CNN (residual SE blocks), under an ensemble of heads."""

import torch
from torch import nn

from eg3d_rlhf.rewards.base import RewardNet
from eg3d_rlhf.rewards.contract import InputSpec
from eg3d_rlhf.rewards.level_sets import LevelSetFeatures
from eg3d_rlhf.rewards.mesh_stats import MeshStatistics
from torch_utils import misc

#----------------------------------------------------------------------------

class SqueezeExcite(nn.Module):
    """Channel gates in (0, 1) from the globally pooled activations (any number of spatial axes)."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        self.fc1 = nn.Linear(channels, max(channels // reduction, 4))
        self.fc2 = nn.Linear(max(channels // reduction, 4), channels)

    def forward(self, x):
        spatial = tuple(range(2, x.ndim))
        gate = torch.sigmoid(self.fc2(torch.nn.functional.silu(self.fc1(x.mean(dim=spatial)))))
        return x * gate.view(*gate.shape, *([1] * len(spatial)))


class ResidualSEBlock(nn.Module):
    """conv-norm-act-conv-norm, SE gates, plus a (strided 1x1) shortcut; stride 2 halves every axis. 3D or 2D."""

    def __init__(self, in_channels, out_channels, stride=2, dims=3):
        super().__init__()
        Conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.conv1 = Conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(min(8, out_channels), out_channels)
        self.conv2 = Conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(min(8, out_channels), out_channels)
        self.se = SqueezeExcite(out_channels)
        self.shortcut = nn.Identity() if (stride == 1 and in_channels == out_channels) else \
            Conv(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x):
        y = torch.nn.functional.silu(self.norm1(self.conv1(x)))
        y = self.se(self.norm2(self.conv2(y)))
        return torch.nn.functional.silu(y + self.shortcut(x))


class SigmaReward(RewardNet):
    """Two trunks. 'levels' (the default): fixed level-set features of raw sigma (level_sets.py) and statistics of the
    mesh people see (mesh_stats.py), standardised over the training bank, read by an ensemble of linear heads; nothing
    but the heads is learned, so about a thousand judgements suffice and the members' spread is a usable doubt. 'cnn':
    residual SE blocks learned end to end on the min-max slab minus the training bank's mean slab (the reference),
    down to an 8192-d feature."""

    takes_reference = True      # With the cnn trunk (uses_reference).
    TRUNKS = ('levels', 'cnn')  # The first is the default.

    def __init__(self,
        trunk           = TRUNKS[0],                # 'levels' (fixed level-set features) or 'cnn' (learned 3D CNN).
        members         = 8,                        # Heads of the ensemble; their mean is the reward.
        hidden          = 0,                        # Hidden units of each head's MLP; 0 = linear heads.
        levels          = (5.0, 10.0, 20.0),        # levels: raw sigma levels read (the mesh level, 10, among them).
        width           = 1.0,                      # levels: softness of the occupancy step, sigma units.
        cells           = (4, 4, 4),                # levels: cells per axis the channels are averaged over.
        mesh_levels     = (10.0,),                  # levels: levels whose closed mesh's statistics are read; () = none.
        channels        = (16, 32, 64, 128, 128),   # cnn: width after the stem and after each strided block.
        pool            = (4, 4, 4),                # cnn: adaptive pooling size; channels[-1] * prod(pool) = feature size.
        input_scale     = 0.01,                     # cnn: multiplier of the prepared slab ([0, 100] -> [0, 1]).
        reference_shape = None,                     # cnn: shape of a reference slab subtracted from inputs; None = off.
    ):
        super().__init__()
        if trunk not in self.TRUNKS:
            raise ValueError(f'unknown sigma trunk {trunk!r}; choose from {", ".join(self.TRUNKS)}')
        if trunk == 'levels' and reference_shape is not None:
            raise ValueError('the levels trunk takes no reference slab (it standardises its features instead)')
        self.trunk, self.input_scale = trunk, input_scale
        # The mean prepared slab of the training bank (set_reference). Heads of one generator share most of their
        # density, so the differences people judge are small next to it; subtracting it lets the first layers see them.
        self.register_buffer('reference', None if reference_shape is None else torch.zeros(list(reference_shape)))
        if trunk == 'levels':
            self.level_sets = LevelSetFeatures(levels, width, cells)
            self.mesh_stats = MeshStatistics(mesh_levels)
            dim = self.level_sets.dim + self.mesh_stats.dim
            self.register_buffer('feature_mean', torch.zeros(dim))
            self.register_buffer('feature_std', torch.ones(dim))
            self.init_head(dim, hidden, members)
            return
        self.stem = nn.Sequential(nn.Conv3d(1, channels[0], 3, stride=2, padding=1, bias=False),
            nn.GroupNorm(min(8, channels[0]), channels[0]), nn.SiLU())
        self.blocks = nn.Sequential(*[ResidualSEBlock(a, b) for a, b in zip(channels[:-1], channels[1:])])
        self.pool = nn.AdaptiveAvgPool3d(tuple(pool))
        self.init_head(channels[-1] * pool[0] * pool[1] * pool[2], hidden, members)

    @classmethod
    def uses_reference(cls, config):
        return config.get('trunk', cls.TRUNKS[0]) == 'cnn'

    @classmethod
    def default_input(cls, slab, config):
        """The levels trunk reads raw sigma (its levels are mesh levels); the cnn trunk the min-max slab."""
        if config.get('trunk', cls.TRUNKS[0]) == 'levels':
            return InputSpec(slab=dict(slab), normalisation='affine', scale=1.0, offset=0.0)
        return InputSpec(slab=dict(slab))

    @property
    def frozen_trunk(self):
        return self.trunk == 'levels'

    def set_reference(self, mean_slab):
        """Store the mean prepared slab [X, Y, Z] of the training inputs (needs reference_shape)."""
        assert self.reference is not None, 'built without reference_shape'
        self.reference.copy_(torch.as_tensor(mean_slab, dtype=torch.float32))

    def set_feature_scale(self, mean, std):
        """Store the levels trunk's feature mean and standard deviation [feature_dim] over the training bank."""
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp(min=1e-6))

    def centred(self, x):
        """x minus the reference slab, resampled (trilinear) when x has another size; x itself when there is none."""
        if self.reference is None:
            return x
        ref = self.reference
        if tuple(ref.shape) != tuple(x.shape[1:]):
            ref = torch.nn.functional.interpolate(ref[None, None], size=x.shape[1:], mode='trilinear', align_corners=True)[0, 0]
        return x - ref.to(x.dtype)

    def trunk_features(self, x):
        """Prepared slabs [N, X, Y, Z] -> the trunk's features [N, feature_dim], before the levels trunk's scaling."""
        misc.assert_shape(x, [None, None, None, None])
        if self.trunk == 'levels':
            return torch.cat([self.level_sets(x), self.mesh_stats(x)], dim=1)
        y = self.blocks(self.stem(self.centred(x)[:, None] * self.input_scale))
        return self.pool(y).flatten(1)

    def scale_features(self, f):
        """Trunk features -> the heads' input (levels: standardised with the stored scale)."""
        return (f - self.feature_mean) / self.feature_std if self.trunk == 'levels' else f

    def features(self, x):
        """Prepared slabs [N, X, Y, Z] -> global features [N, feature_dim] (levels: raw sigma; cnn: by default self
        min-max to [0, 100])."""
        return self.scale_features(self.trunk_features(x))

#----------------------------------------------------------------------------
