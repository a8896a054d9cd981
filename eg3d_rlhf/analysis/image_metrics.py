"""Image consistency (PSNR, SSIM) and distribution distances (FID, KID) on features of a local Inception network."""

import pickle
import zipfile

import numpy as np
import torch

#----------------------------------------------------------------------------
# Per-image consistency of two renders of the same z and camera.

def to_uint8_hwc(images):
    """Images [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    return (images.clamp(-1, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def psnr_ssim(a, b):
    """(PSNR in dB [N], SSIM [N]) between uint8 images a and b [N, H, W, 3] (scikit-image; identical -> inf, 1)."""
    import skimage.metrics  # pylint: disable=import-outside-toplevel  # With scipy: 0.3 s of train.py's start otherwise.
    psnr, ssim = [], []
    for x, y in zip(a, b):
        psnr.append(float('inf') if np.array_equal(x, y) else skimage.metrics.peak_signal_noise_ratio(x, y, data_range=255))
        ssim.append(skimage.metrics.structural_similarity(x, y, channel_axis=2, data_range=255))
    return np.array(psnr), np.array(ssim)

#----------------------------------------------------------------------------
# Distribution distances on features [N, D].

def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)): the Fréchet distance of two Gaussians (FID on features)."""
    import scipy.linalg  # pylint: disable=import-outside-toplevel  # 0.2 s to import; train.py's start needs none.
    covmean = scipy.linalg.sqrtm(np.dot(sigma1, sigma2))
    if not np.isfinite(covmean).all():
        # A product of singular covariances (fewer samples than feature dimensions) can have no finite square root
        # in LAPACK's Schur form; a tiny ridge on both (as pytorch-fid does) gives one.
        ridge = np.eye(len(sigma1)) * 1e-6
        covmean = scipy.linalg.sqrtm(np.dot(sigma1 + ridge, sigma2 + ridge))
    covmean = np.real(covmean)
    return float(np.square(mu1 - mu2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(f1, f2, ddof=1):
    """FID of two feature sets [N, D]; ddof=0 divides the covariances by N as EG3D's metrics do, 1 by N - 1."""
    f1, f2 = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    return frechet_distance(f1.mean(0), np.cov(f1, rowvar=False, ddof=ddof), f2.mean(0), np.cov(f2, rowvar=False, ddof=ddof))


def kid_from_features(f1, f2, num_subsets=100, max_subset_size=1000, seed=0):
    """Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3, averaged over
    random subsets (StyleGAN's recipe; with fewer samples than max_subset_size, the subsets are the whole sets)."""
    f1, f2 = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    n, d = min(len(f1), len(f2), max_subset_size), f1.shape[1]
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = f1[rng.choice(len(f1), n, replace=False)]
        y = f2[rng.choice(len(f2), n, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        total += (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
    return float(total / num_subsets)

#----------------------------------------------------------------------------
# The feature network: a local file only (nothing is downloaded).

class InceptionError(ValueError):
    """A feature-network file that cannot be used."""


def load_inception(path, trust_pickle=False, device='cpu'):
    """A callable uint8 images [N, 3, H, W] -> features [N, D] from a local file: a torch.export archive, a
    TorchScript one, or NVIDIA's inception-2015-12-05.pkl (called with return_features=True). Loading any of them can
    run code stored in the file (a pickle directly; export and TorchScript archives carry pickled parts), so every
    format needs trust_pickle."""
    if not trust_pickle:
        kind = 'an export or TorchScript archive with pickled parts' if zipfile.is_zipfile(path) else 'a pickle'
        raise InceptionError(f'{path}: {kind}; loading it can run code stored in it, so pass --trust-pickle if you '
            'trust it')
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:                        # torch.export archives name their format in a record.
            is_export = any(name.rsplit('/', 1)[-1] == 'archive_format' for name in z.namelist())
        if is_export:
            try:
                net = torch.export.load(path).module()
            except Exception as err:                            # Export raises several error types.
                raise InceptionError(f'{path}: a damaged torch.export archive ({type(err).__name__})') from None
            return lambda images: net(images)
        try:
            net = torch.jit.load(path, map_location=device).eval()
        except Exception as err:                                # TorchScript raises several error types.
            raise InceptionError(f'{path}: neither a torch.export nor a TorchScript archive ({type(err).__name__})') from None
        return lambda images: net(images.to(device))
    with open(path, 'rb') as f:
        net = pickle.load(f).to(device).eval()
    return lambda images: net(images.to(device), return_features=True)


def features(extract, images, batch=32):
    """Features [N, D] (numpy) of images [N, 3, H, W] in [-1, 1]."""
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x = (images[s : s + batch].clamp(-1, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
            out.append(extract(x).float().cpu().numpy())
    return np.concatenate(out)

#----------------------------------------------------------------------------
