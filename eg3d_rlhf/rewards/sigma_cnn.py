"""The `sigma` reward: a 3D CNN over the prepared sigma slab, residual SE blocks down to an 8192-d feature."""

import torch
from torch import nn

from eg3d_rlhf.rewards.base import RewardNet
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
    takes_reference = True

    def __init__(self,
        channels        = (16, 32, 64, 128, 128),   # Width after the stem and after each strided block.
        pool            = (4, 4, 4),                # Adaptive pooling size; channels[-1] * prod(pool) = feature size.
        hidden          = 512,                      # Hidden units of the scoring MLP.
        input_scale     = 0.01,                     # Multiplier of the prepared slab ([0, 100] -> [0, 1]).
        reference_shape = None,                     # Shape of a reference slab subtracted from inputs; None = off.
    ):
        super().__init__()
        self.input_scale = input_scale
        # The mean prepared slab of the training bank (set_reference). Heads of one generator share most of their
        # density, so the differences people judge are small next to it; subtracting it lets the first layers see them.
        self.register_buffer('reference', None if reference_shape is None else torch.zeros(list(reference_shape)))
        self.stem = nn.Sequential(nn.Conv3d(1, channels[0], 3, stride=2, padding=1, bias=False),
            nn.GroupNorm(min(8, channels[0]), channels[0]), nn.SiLU())
        self.blocks = nn.Sequential(*[ResidualSEBlock(a, b) for a, b in zip(channels[:-1], channels[1:])])
        self.pool = nn.AdaptiveAvgPool3d(tuple(pool))
        self.init_head(channels[-1] * pool[0] * pool[1] * pool[2], hidden)

    def set_reference(self, mean_slab):
        """Store the mean prepared slab [X, Y, Z] of the training inputs (needs reference_shape)."""
        assert self.reference is not None, 'built without reference_shape'
        self.reference.copy_(torch.as_tensor(mean_slab, dtype=torch.float32))

    def centred(self, x):
        """x minus the reference slab, resampled (trilinear) when x has another size; x itself when there is none."""
        if self.reference is None:
            return x
        ref = self.reference
        if tuple(ref.shape) != tuple(x.shape[1:]):
            ref = torch.nn.functional.interpolate(ref[None, None], size=x.shape[1:], mode='trilinear', align_corners=True)[0, 0]
        return x - ref.to(x.dtype)

    def features(self, x):
        """Prepared slabs [N, X, Y, Z] (by default self min-max to [0, 100]) -> global features [N, feature_dim]."""
        misc.assert_shape(x, [None, None, None, None])
        y = self.blocks(self.stem(self.centred(x)[:, None] * self.input_scale))
        return self.pool(y).flatten(1)

#----------------------------------------------------------------------------
