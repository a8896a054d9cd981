"""Reward models over generator geometry behind one contract: an input spec, and score(raw sigma) -> [N]."""

# Modules:
#   contract    InputSpec (grid, normalisation, axis order) and Reward: the one scoring path from raw sigma
#   base        RewardNet: .config from the constructor, the scoring MLP head, score(x) -> [N] from features(x) -> [N, F]
#   sigma_cnn   the sigma slab reward: fixed level-set features (default) or a learned 3D CNN, under an ensemble of heads
#   level_sets  the fixed features: soft occupancy, area, orientation and curvature of density level sets, per cell
#   mesh_stats  the fixed features of the mesh people see: roughness, bending, caps, pieces, floaters, handles
#   linear_heads  linear heads on fixed features, solved exactly (L-BFGS), bootstrap members, L2 chosen on validation
#   depth_cnn   soft depth maps rendered from the slab at a few yaws (differentiable), residual 2D CNN
#   pointnet    surface points of the slab (Newton-refined, differentiable), PointNet with a max-pooled feature
#   sigma_unet  the published sigma-field architecture: pytorch3dunet's ResidualUNetSE3D, 8192-d max-pooled feature, MLPs
#   bundle      the published reward bundle (zip or folder: best_model.pt + release_config.yaml) read as data
#   losses      Bradley-Terry (with or without ties) on reward pairs; Cauchy-Schwarz on unpaired good/bad sets
#   checkpoint  save_reward / load_reward (weights_only) -> contract.Reward
#   fitting     a bank's prepared inputs, RewardFitter (early stopping) or linear_heads, centring, held-out accuracy

import collections.abc
import importlib

# Each reward class is imported on first use (PEP 562): a tool that only loads a checkpoint of one kind, or none,
# does not pay for the others (pytorch3dunet with scikit-image, the mesh statistics with scipy.sparse).
CLASSES = dict(SigmaReward='sigma_cnn', DepthReward='depth_cnn', PointCloudReward='pointnet',     # class -> module.
    SigmaUNetReward='sigma_unet')
KINDS = {'sigma': 'SigmaReward', 'depth': 'DepthReward', 'pointcloud': 'PointCloudReward',     # kind -> class name.
    'sigma-unet': 'SigmaUNetReward'}
HELP = {                                                                                     # kind -> one line.
    'sigma':      'the slab sigma: level-set features and mesh statistics read by linear heads, or a 3D CNN',
    'depth':      'depth maps of the iso-surface from several views, read by a 2D CNN',
    'pointcloud': 'points on the iso-surface, read by a PointNet',
    'sigma-unet': 'the published sigma-field network (a 3D residual U-Net, pytorch3dunet)',
}


def __getattr__(name):
    if name in CLASSES:
        return getattr(importlib.import_module(f'{__name__}.{CLASSES[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


class RewardKinds(collections.abc.Mapping):
    """kind -> reward class, a read-only mapping whose keys cost nothing and whose values import their module."""

    def __getitem__(self, kind):
        return __getattr__(KINDS[kind])

    def __contains__(self, kind):
        return kind in KINDS

    def __iter__(self):
        return iter(KINDS)

    def __len__(self):
        return len(KINDS)


REWARDS = RewardKinds()


def build_reward(kind, **config):
    """A reward model of the named kind, built from its constructor kwargs (a model's .config rebuilds it)."""
    if kind not in REWARDS:
        raise ValueError(f'Unknown reward kind {kind!r}; valid kinds: {", ".join(sorted(REWARDS))}')
    return REWARDS[kind](**config)
