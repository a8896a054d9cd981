"""tools/evaluate.py's inputs and outputs: a stand-in feature network, tiny generator pairs, before/after pictures."""

import numpy as np
import PIL.Image
import torch

from eg3d_rlhf.analysis import collateral
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.rewards.checkpoint import save_reward
from tests.helpers.eg3d import tiny_generator
from tests.helpers.rewards import slab_description, tiny_reward
from training import legacy

#----------------------------------------------------------------------------
# Feature networks.

class PooledFeatures(torch.nn.Module):
    """A stand-in feature network: 2x2 average-pooled colours, 12 features."""
    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x.float(), 2).flatten(1)


def save_feature_network(path, kind):
    """PooledFeatures saved at `path` as a torch.export archive (kind 'export') or TorchScript; returns `path`."""
    if kind == 'export':
        torch.export.save(torch.export.export(PooledFeatures(), (torch.zeros(2, 3, 8, 8, dtype=torch.uint8),),
            dynamic_shapes=({0: torch.export.Dim('n'), 2: torch.export.Dim('h', min=2), 3: torch.export.Dim('w', min=2)},)), path)
    else:
        torch.jit.save(torch.jit.script(PooledFeatures()), path)
    return path

#----------------------------------------------------------------------------
# Generator pairs.

def save_pair(root, shifts):
    """(original pkl, tuned pkl, reward checkpoint) of tiny generators whose decoder sigma biases are shifted."""
    paths = []
    for name, shift in zip(('original', 'tuned'), shifts):
        G = tiny_generator().eval()
        with torch.no_grad():
            G.decoder.net[-1].bias[0] += shift
        path = str(root / f'{name}.pkl')
        legacy.save_network_pkl(path, dict(G=G, G_ema=G, D=None, augment_pipe=None, training_set_kwargs=None))
        paths.append(path)
    reward = str(root / 'reward.pt')
    save_reward(reward, tiny_reward(seed=3), 'sigma', slab_description())
    return (*paths, reward)

#----------------------------------------------------------------------------
# Before/after geometry pictures.

def before_after_halves(path, rows, res=128):
    """(original half, tuned half) of a before/after picture's tiles (grey), after checking its layout: the label
    strips, then rows of res x res tiles: original front and profile, tuned front and profile, and in a collateral
    strip (RGB: analysis/collateral.strip) a fifth tile, the depth change in colour, and its colour bar below."""
    picture = np.asarray(PIL.Image.open(path))
    columns, bar = (5, collateral.BAR_HEIGHT) if picture.ndim == 3 else (4, 0)
    assert picture.shape[:2] == (preview.LABEL_TOP + rows * res + bar, preview.LABEL_LEFT + columns * res)
    grey = picture[preview.LABEL_TOP:preview.LABEL_TOP + rows * res, preview.LABEL_LEFT:preview.LABEL_LEFT + 4 * res]
    if picture.ndim == 3:
        assert picture.shape[2] == 3 and (grey[..., 0] == grey[..., 1]).all() and (grey[..., 0] == grey[..., 2]).all()
        grey = grey[..., 0]                                               # The views are grey.
    assert (grey < 255).mean() > 0.05                                     # Surfaces are drawn, not only background.
    return grey[:, :2 * res], grey[:, 2 * res:]

#----------------------------------------------------------------------------
