"""The diffusion policy's entropy, which has no closed form: fit a Gaussian mixture (3 components, full
covariances) to sampled actions per state and take the mixture's entropy upper bound
H <= -sum_k w_k log w_k + sum_k w_k H(N(mu_k, Sigma_k)), H(N) = d/2 (1 + log 2 pi) + 1/2 log |Sigma|."""

from __future__ import annotations

import math

import numpy as np


def mixture_entropy_bound(weights: np.ndarray, covariances: np.ndarray) -> float:
    """weights (K,), covariances (K, d, d) -> the upper bound above (nats)."""
    w = np.asarray(weights, np.float64)
    d = covariances.shape[-1]
    logdet = np.linalg.slogdet(np.asarray(covariances, np.float64))[1]
    gauss = 0.5 * d * (1.0 + math.log(2 * math.pi)) + 0.5 * logdet
    nz = w > 0
    return float(-(w[nz] * np.log(w[nz])).sum() + (w * gauss).sum())


def gmm_entropy(actions: np.ndarray, components: int = 3, seed: int = 42) -> float:
    """Mean over states of the mixture bound: actions (S, N, d) sampled from the policy, N per state."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    values = []
    with threadpool_limits(1):  # 200 x d fits: BLAS threads cost more than they give
        for a in np.asarray(actions, np.float64):
            gm = GaussianMixture(components, covariance_type="full", random_state=seed, reg_covar=1e-6).fit(a)
            values.append(mixture_entropy_bound(gm.weights_, gm.covariances_))
    return float(np.mean(values))
