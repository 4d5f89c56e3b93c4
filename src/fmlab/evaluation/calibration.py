"""Temperature scaling (Guo et al. 2017): one number T fitted on the validation split, scores divided by T.

It changes no prediction (argmax is kept), only how sure the probabilities are; fitted on validation
scores only, so the test set stays untouched until the final numbers.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

LOG_T_RANGE = (-3.0, 3.0)  # T between 0.05 and 20


def nll(scores: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(scores / temperature)."""
    logp = log_softmax(np.asarray(scores, np.float64) / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of (validation) `scores`."""
    result = minimize_scalar(lambda log_t: nll(scores, labels, float(np.exp(log_t))), bounds=LOG_T_RANGE,
                             method="bounded", options={"xatol": 1e-5})
    return float(np.exp(result.x))


def scaled_probs(scores: np.ndarray, temperature: float) -> np.ndarray:
    return np.exp(log_softmax(np.asarray(scores, np.float64) / temperature, axis=1))
