"""The spectrum of a weight matrix: Marchenko–Pastur statistics (``mp``), the scan of every
matrix of a checkpoint (``scan``), its plots, and Spectrum's unfreeze lists (``spectrum``).

The names of laserkit 0.1's ``laserkit.spectral`` module are still importable from here."""

from ..core.lazy import lazy_attributes

_MP = (
    "threads",
    "sigma_hat",
    "check_estimator",
    "mp_median",
    "gd_omega",
    "mp_threshold",
    "snr",
    "gram_singular_values",
    "svd_singular_values",
    "effective_rank",
    "matrix_stats",
    "ESTIMATORS",
    "GRAM_CHUNK_BYTES",
)
__getattr__ = lazy_attributes(__name__, dict.fromkeys(_MP, "mp"), globals())
