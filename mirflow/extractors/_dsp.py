"""Small signal helpers shared by several extractors."""

from __future__ import annotations

import numpy as np


def unbiased_autocovariance(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Mean-removed autocovariance for lags ``0..max_lag``, each divided by its number of terms.

    Written here because ``librosa.autocorrelate`` is biased (long lags are
    penalised by their fewer terms), which would favour fast tempi in the
    periodicity measures of the rhythm and descriptor extractors. Computed
    by FFT (zero-padded to avoid circular wrap).
    """
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean()
    n = x.size
    max_lag = int(min(max_lag, n - 1))
    if n < 2 or max_lag < 1:
        return np.zeros(max(max_lag, 0) + 1)
    nfft = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(x, nfft)
    r = np.fft.irfft(spec * np.conj(spec), nfft)[: max_lag + 1]
    return r / (n - np.arange(max_lag + 1))
