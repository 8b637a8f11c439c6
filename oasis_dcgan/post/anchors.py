"""The ladder of anchors a generator is read against: simple image sources whose scores say
what a number means on this data.

- held-out real slices: what an unseen brain scores (the top of the ladder short of copying);
- the same slices blurred by a 1-pixel Gaussian: real anatomy with fine detail lost;
- a linear model: a Gaussian over the training split's first principal components. It has no
  notion of anatomy beyond the average brain and its main modes of variation; a generator that
  scores below it has not yet learnt more than a PCA does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BLUR_SIGMA = 1.0          # pixels
LINEAR_COMPONENTS = 40
FIT_IMAGES = 2048         # training images the linear model is fitted on: its 40 modes are settled long before


def blurred(images: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Each image [N, H, W] blurred on its own (never across the batch axis)."""
    return ndimage.gaussian_filter(np.asarray(images, np.float32), sigma=(0, sigma, sigma), mode="nearest")


@dataclass
class LinearModel:
    """x = mean + sum_k z_k * scales_k * components_k, z ~ N(0, 1): a Gaussian in the principal subspace."""
    mean: np.ndarray         # [H*W]
    components: np.ndarray   # [K, H*W], orthonormal rows, by decreasing variance
    scales: np.ndarray       # [K], the standard deviation along each component
    shape: tuple
    fitted_on: int           # how many images

    def sample(self, n: int, rng_seed: int) -> np.ndarray:
        z = np.random.default_rng(rng_seed).standard_normal((n, len(self.scales)))
        x = self.mean + (z * self.scales) @ self.components
        return np.clip(x, -1.0, 1.0).reshape(n, *self.shape).astype(np.float32)


def fit_linear(images: np.ndarray, components: int = LINEAR_COMPONENTS) -> LinearModel:
    """Principal components of [N, H, W] images from the N x N Gram matrix.

    With fewer images than pixels (2,048 against 65,536 at 256) the Gram matrix is the small
    side: one matrix product and an N x N eigendecomposition, not an SVD of the image matrix.
    """
    n, h, w = images.shape
    x = np.asarray(images, np.float64).reshape(n, -1)
    mean = x.mean(axis=0)
    xc = x - mean
    k = min(components, n - 1)
    eigval, eigvec = np.linalg.eigh(xc @ xc.T)
    top = np.argsort(eigval)[::-1][:k]
    sing = np.sqrt(np.maximum(eigval[top], 0))
    comps = (eigvec[:, top].T @ xc) / sing[:, None]
    return LinearModel(mean=mean, components=comps, scales=sing / np.sqrt(n - 1), shape=(h, w),
                       fitted_on=n)
