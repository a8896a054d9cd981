"""The `sigma-unet` reward: the published sigma-field architecture (a residual SE 3D U-Net, a max-pooled feature, MLPs)."""

import torch
from torch import nn
from pytorch3dunet.unet3d.model import ResidualUNetSE3D

from eg3d_rlhf.rewards.base import RewardNet
from eg3d_rlhf.rewards.contract import InputSpec
from torch_utils import misc

#----------------------------------------------------------------------------
# Facts from "Sculpting NeRF Geometry" and its released reward (7wnzkgie): the network reads the self min-max scaled
# slab in (z, y, x) order; a ResidualUNetSE3D (pytorch3dunet) maps it to 8 channels at full resolution; the last 4
# are max-reduced over channels and adaptively max-pooled into 8192 bins along the first spatial axis (each bin the
# maximum over whole (y, x) planes), the 8192-d global feature; an MLP maps it to 512, and the scalar head to r. The
# BT and pairs heads and the U-Net's reconstruction branch are trained there but never used for r: they are built so
# the published state_dict loads strictly (its key names are this module's attribute names).

ACTIVATIONS = {'softplus': nn.Softplus, 'relu': nn.ReLU, 'silu': nn.SiLU, 'gelu': nn.GELU, 'selu': nn.SELU,
    'lrelu': lambda: nn.LeakyReLU(0.1)}                                 # The paper's activation names.

PUBLISHED_MLP   = dict(input_size=8192, output_size=512, hidden_sizes=[512, 512], activation='softplus', residual=True)
PUBLISHED_HEAD  = dict(input_size=512, output_size=1, hidden_sizes=[256, 128], activation='softplus', residual=True)
PUBLISHED_PAIRS = dict(input_size=1024, output_size=1, hidden_sizes=[256, 128], activation='softplus', residual=True)
PUBLISHED_INPUT = dict(normalisation='self_minmax', scale=100.0, order='zyx')  # Each slab min-max to [0, 100], (z, y, x).


class PublishedMLP(nn.Module):
    """The paper's MLP: input_layer (no activation), hidden_layers[i] = Linear + activation, output_layer.

    Its residual step (on when residual and there are two or more hidden sizes) adds the input layer's output h to
    the output of all hidden layers but the last, just before the last one. With hidden sizes [a, b] there is one
    hidden layer, so nothing runs before the addition and the step doubles h: out = last(2 h). This is kept as it is,
    since the released weights were trained with it."""

    def __init__(self,
        input_size,                 # Input features.
        output_size,                # Output features.
        hidden_sizes,               # Widths after the input layer and after each hidden layer (two or more).
        activation  = 'softplus',   # Activation after each hidden Linear (ACTIVATIONS).
        residual    = True,         # The residual step above.
    ):
        super().__init__()
        sizes = [int(s) for s in hidden_sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f'MLP hidden_sizes must list two or more positive widths, got {list(hidden_sizes)}')
        if activation not in ACTIVATIONS:
            raise ValueError(f'unknown MLP activation {activation!r}; known: {", ".join(ACTIVATIONS)}')
        if residual and sizes[-2] != sizes[0]:
            raise ValueError(f'a residual MLP adds widths {sizes[0]} and {sizes[-2]}; they must be equal')
        self.residual = bool(residual)
        self.input_layer = nn.Linear(int(input_size), sizes[0])
        self.hidden_layers = nn.ModuleList([nn.Sequential(nn.Linear(a, b), ACTIVATIONS[activation]())
            for a, b in zip(sizes[:-1], sizes[1:])])
        self.output_layer = nn.Linear(sizes[-1], int(output_size))

    def forward(self, x):
        h = self.input_layer(x)
        y = h
        for layer in self.hidden_layers[:-1]:
            y = layer(y)
        if self.residual:
            y = y + h
        return self.output_layer(self.hidden_layers[-1](y))


class PublishedUNet(ResidualUNetSE3D):
    """pytorch3dunet's ResidualUNetSE3D as the paper builds it: no final activation (regression), plus the two 1x1
    convolutions of its reconstruction branch, which only hold weights here."""

    def __init__(self, f_maps, out_channels, layer_order, num_groups, conv_padding, upsample):
        super().__init__(in_channels=1, out_channels=out_channels, final_sigmoid=False, f_maps=list(f_maps),
            layer_order=layer_order, num_groups=num_groups, is_segmentation=False, conv_padding=conv_padding,
            upsample=upsample)
        self.conv1d_for_recon = nn.Conv1d(1, 1, 1)
        self.conv3d_for_recon = nn.Conv3d(1, 1, 1)

#----------------------------------------------------------------------------

class SigmaUNetReward(RewardNet):
    def __init__(self,
        f_maps              = (8, 16, 32, 64, 128, 256),    # U-Net widths per level (5 poolings for 6 levels).
        out_channels        = 8,                            # U-Net output channels: reconstruction ones, then feature ones.
        feature_channels    = 4,                            # The last channels, max-reduced into one feature volume.
        layer_order         = 'gcr',                        # pytorch3dunet SingleConv order: GroupNorm, Conv3d, ReLU.
        num_groups          = 8,                            # GroupNorm groups.
        conv_padding        = 1,                            # Padding of the U-Net's 3x3x3 convolutions.
        upsample            = 'default',                    # Decoder upsampling (pytorch3dunet; 'default' = transposed conv here).
        feature_size        = 8192,                         # Adaptive max-pool bins along the first spatial axis.
        mlp                 = PUBLISHED_MLP,                # Global MLP (PublishedMLP kwargs): feature -> global vector.
        scalar_head         = PUBLISHED_HEAD,               # Reward head: global vector -> r.
        bt_head             = PUBLISHED_HEAD,               # Bradley-Terry head (trained there, unused for r).
        pairs_head          = PUBLISHED_PAIRS,              # Pairs head on two concatenated global vectors (unused for r).
    ):
        super().__init__()
        if not 1 <= feature_channels <= out_channels:
            raise ValueError(f'feature_channels must be in [1, out_channels={out_channels}], got {feature_channels}')
        if mlp['input_size'] != feature_size or scalar_head['input_size'] != mlp['output_size'] or scalar_head['output_size'] != 1:
            raise ValueError(f'the MLP must read the {feature_size}-d feature and the scalar head its '
                f'{mlp["output_size"]}-d output, giving 1 value (got {mlp["input_size"]}, {scalar_head["input_size"]}, '
                f'{scalar_head["output_size"]})')
        self.feature_channels, self.feature_size = int(feature_channels), int(feature_size)
        self.feature_dim, self.members = self.feature_size, 1
        self.Conv3DModule = PublishedUNet(f_maps, out_channels, layer_order, num_groups, conv_padding, upsample)
        self.MLP = PublishedMLP(**mlp)
        self.scalar_rwd_head = PublishedMLP(**scalar_head)
        self.scalar_rwd_head_BT = PublishedMLP(**bt_head)
        self.scalar_rwd_head_pairs = PublishedMLP(**pairs_head)

    @classmethod
    def default_input(cls, slab, config):
        """train_reward trains it on the published contract: min-max [0, 100], (z, y, x) order."""
        return InputSpec(slab=dict(slab), **PUBLISHED_INPUT)

    def features(self, x):
        """Prepared slabs [N, D, H, W] ((z, y, x) of the slab, min-max [0, 100]) -> global features [N, feature_size]."""
        misc.assert_shape(x, [None, None, None, None])
        volume = self.Conv3DModule(x[:, None])[:, -self.feature_channels:].amax(dim=1)
        pooled = torch.nn.functional.adaptive_max_pool3d(volume[:, None], (self.feature_size, 1, 1))
        return pooled.flatten(1)

    def global_vector(self, f):
        """Global features [N, feature_size] -> the MLP's vector [N, mlp output_size] that the heads read."""
        misc.assert_shape(f, [None, self.feature_dim])
        return self.MLP(f)

    def output_biases(self):
        return [self.scalar_rwd_head.output_layer.bias]

    def member_scores(self, f):
        """Global features [N, feature_size] -> rewards [N, 1]: scalar_rwd_head(MLP(f))."""
        return self.scalar_rwd_head(self.global_vector(f))

#----------------------------------------------------------------------------
