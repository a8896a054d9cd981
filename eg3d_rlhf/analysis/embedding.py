"""Where samples sit in a reward's feature space: PCA then UMAP of its global feature, group separation, reward order."""

import os

import numpy as np
import torch

from eg3d_rlhf.analysis import report_plots

#----------------------------------------------------------------------------

class EmbeddingError(ValueError):
    """Features that cannot be embedded (too few samples, or not finite)."""


@torch.no_grad()
def reward_features(reward, slabs, batch=8, progress=None, names=None):
    """(features [N, F], rewards [N]) of raw slabs [N, X, Y, Z] through the reward's own input path; a reward that is
    not finite stops it (rewards.contract.ScoreError naming the sample: names [N], or its index)."""
    feats, scores = [], []
    for begin in range(0, len(slabs), batch):
        x = torch.as_tensor(np.asarray(slabs[begin:begin + batch], dtype=np.float32))
        f = reward.features(x)
        feats.append(f.cpu())
        scores.append(reward.model.score_features(f).cpu())
        reward.check_scores(scores[-1], x, None if names is None else names[begin:begin + len(x)], start=begin)
        if progress is not None:
            progress(len(x))
    return torch.cat(feats).double().numpy(), torch.cat(scores).double().numpy()


def embed(features, pca_components=50, n_neighbors=25, min_dist=0.1, seed=0):
    """EmbeddingError for fewer than 4 samples or features that are not finite; else {pca [N, P] (P <= pca_components), explained [P] (variance ratios), umap [N, 2]} of features [N, F]: PCA of
    the features as they are (not standardised: a feature's scale is part of what the reward's head reads), then UMAP
    of the PCA coordinates (fixed seed, so the same input gives the same map; n_neighbors is capped at N - 1), turned
    to its own principal axes: UMAP's axes carry no meaning of their own (umap-learn versions lay the same map out in
    other orientations), so UMAP 1 is made the map's direction of largest spread."""
    import umap
    from sklearn.decomposition import PCA
    features = np.asarray(features, dtype=np.float64)
    if len(features) < 4 or not np.isfinite(features).all():
        raise EmbeddingError(f'embedding needs at least 4 samples of finite features, got {len(features)}')
    x = features
    pca = PCA(n_components=min(pca_components, len(x) - 1, x.shape[1]), random_state=seed).fit(x)
    coords = pca.transform(x)
    mapper = umap.UMAP(n_neighbors=min(n_neighbors, len(x) - 1), min_dist=min_dist, n_components=2, random_state=seed)
    return dict(pca=coords, explained=pca.explained_variance_ratio_, umap=principal_axes(mapper.fit_transform(coords)))


def principal_axes(points):
    """points [N, D] centred and rotated onto their principal axes (largest spread first), each axis signed so that
    its largest coordinate is positive: distances are unchanged."""
    centred = points - points.mean(axis=0)
    _u, _s, vt = np.linalg.svd(centred, full_matrices=False)
    turned = centred @ vt.T
    peaks = turned[np.abs(turned).argmax(axis=0), np.arange(turned.shape[1])]
    return turned * np.where(peaks < 0, -1.0, 1.0)


def knn_separation(points, groups, k=5, folds=5, seed=0):
    """Mean accuracy of a k-nearest-neighbour classifier predicting each point's group, stratified `folds`-fold cross
    validated: 0.5 for two mixed groups of equal size, 1 for cleanly separated ones."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    groups = np.asarray(groups)
    folds = min(folds, int(np.bincount(np.unique(groups, return_inverse=True)[1]).min()))
    if folds < 2:
        raise ValueError('k-NN separation needs at least two samples of every group')
    classifier = KNeighborsClassifier(n_neighbors=min(k, len(points) - len(points) // folds - 1))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(classifier, points, groups, cv=split).mean())


def reward_order(embedding, rewards):
    """Spearman's rho (and p) between the rewards and the first UMAP axis, and the first principal component."""
    import scipy.stats  # pylint: disable=import-outside-toplevel  # 1 s to import; --help and --dry-run need none.
    out = {}
    for name, axis in (('umap1', embedding['umap'][:, 0]), ('pc1', embedding['pca'][:, 0])):
        test = scipy.stats.spearmanr(axis, rewards)
        out[f'spearman_{name}'], out[f'spearman_{name}_p'] = float(test.statistic), float(test.pvalue)
    return out

#----------------------------------------------------------------------------

def plot_groups(points, groups, names, path, title):
    """Scatter of 2-D points coloured by group; pairs of the same seed joined by a faint line when both groups have
    the same number of points in the same order."""
    plt = report_plots._pyplot()
    groups = np.asarray(groups)
    fig, ax = plt.subplots(figsize=(6, 5))
    sides = [points[groups == g] for g in range(len(names))]
    if len(sides) == 2 and len(sides[0]) == len(sides[1]):
        for a, b in zip(*sides):
            ax.plot([a[0], b[0]], [a[1], b[1]], color='grey', alpha=0.15, linewidth=0.6)
    for g, (name, side) in enumerate(zip(names, sides)):
        ax.scatter(side[:, 0], side[:, 1], s=14, label=f'{name} ({len(side)})', color=f'C{g}')
    ax.set(xlabel='UMAP 1', ylabel='UMAP 2', title=title)
    ax.legend(loc='best')
    report_plots._save(fig, path)


def plot_by_reward(points, rewards, path, title):
    """Scatter of 2-D points coloured by reward."""
    plt = report_plots._pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    shown = ax.scatter(points[:, 0], points[:, 1], c=rewards, cmap='viridis', s=16)
    fig.colorbar(shown, ax=ax, label='reward')
    ax.set(xlabel='UMAP 1', ylabel='UMAP 2', title=title)
    report_plots._save(fig, path)

#----------------------------------------------------------------------------

def report(reward, slabs, outdir, reward_path, pca_components=50, n_neighbors=25, min_dist=0.1, k=5, seed=0, batch=8,
        names=None):
    """Embed the reward's global feature of one generator's (or bank's) raw slabs [N, X, Y, Z], or of two generators'
    at the same seeds (slabs: a list of one or two), and write report.json/.html, umap_reward.png (the first coloured
    by reward, Spearman's rho against UMAP 1 and PC 1) and, for two, umap_models.png with their k-NN separation in the
    UMAP plane and in PCA space. Returns the summary; EmbeddingError when the features cannot be embedded, and
    rewards.contract.ScoreError when a reward is not finite (names: one list of the samples' names per entry of slabs)."""
    names = [None] * len(slabs) if names is None else names
    feats = [reward_features(reward, s, batch=batch, names=n) for s, n in zip(slabs, names)]
    os.makedirs(outdir, exist_ok=True)
    out = lambda name: os.path.join(outdir, name)
    summary = dict(reward_model=os.path.abspath(reward_path), samples=len(slabs[0]), feature_dim=int(feats[0][0].shape[1]),
        pca_components=pca_components, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
    single = embed(feats[0][0], pca_components, n_neighbors, min_dist, seed)
    summary['by_reward'] = dict(reward_order(single, feats[0][1]),
        pca_explained_top5=[float(v) for v in single['explained'][:5]])
    plot_by_reward(single['umap'], feats[0][1], out('umap_reward.png'),
        f'reward feature UMAP, coloured by reward (Spearman rho vs UMAP 1: {summary["by_reward"]["spearman_umap1"]:.2f})')
    pictures = ['umap_reward.png']
    if len(feats) == 2:
        both = embed(np.concatenate([feats[0][0], feats[1][0]]), pca_components, n_neighbors, min_dist, seed)
        groups = np.repeat([0, 1], len(slabs[0]))
        summary['separation'] = dict(knn_umap=knn_separation(both['umap'], groups, k=k, seed=seed),
            knn_pca=knn_separation(both['pca'], groups, k=k, seed=seed), k=k,
            reward_mean=dict(original=float(feats[0][1].mean()), tuned=float(feats[1][1].mean())))
        plot_groups(both['umap'], groups, ['original', 'tuned'], out('umap_models.png'),
            f'original vs tuned, same seeds (k-NN accuracy {summary["separation"]["knn_umap"]:.2f})')
        pictures.insert(0, 'umap_models.png')
    report_plots.write_report(outdir, 'Reward feature embedding', summary, pictures)
    return summary

#----------------------------------------------------------------------------
