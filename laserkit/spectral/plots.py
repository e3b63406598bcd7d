"""Heatmap of a scan: SNR and SNR/s_max by layer × module type (matplotlib, Agg backend).

Undefined values get their own colours rather than vanishing into the colour scale: grey for NaN
(spectrum undefined: non-finite or all-zero weights), black for +∞ (no singular value at or below
τ, so the noise sum is empty), white for a (layer, type) that was not scanned.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..core.figures import save_figure

NAN_COLOR, INF_COLOR = "#9e9e9e", "#000000"


def _grid(
    records: list, types: list[str], num_layers: int, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """(values, present) grids of one statistic, types × layers."""
    grid = np.full((len(types), num_layers), np.nan)
    present = np.zeros_like(grid, dtype=bool)
    row = {t: i for i, t in enumerate(types)}
    for r in records:
        grid[row[r.type], r.layer] = r.stats[key]
        present[row[r.type], r.layer] = True
    return grid, present


def snr_heatmap(result, path: str | os.PathLike, title: str | None = None) -> Path:
    """Write the two-panel heatmap (log10 SNR, log10 SNR/s_max) to ``path`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colors
    from matplotlib import pyplot as plt

    from .spectrum import type_order

    blocks = [
        r
        for r in result.records
        if r.layer is not None and r.layer < result.num_layers and min(r.shape) > 1
    ]  # norm scales (1×n: one value, SNR ∞) would be all black
    types = type_order(r.type for r in blocks) or ["(none)"]
    layers = max(result.num_layers, 1)
    fig, axes = plt.subplots(
        1, 2, figsize=(min(4 + 0.28 * layers, 30) * 2, 1.6 + 0.45 * len(types)), squeeze=False
    )
    counts = {"nan": 0, "inf": 0}
    for ax, key, label in zip(
        axes[0],
        ("snr", "snr_over_smax"),
        ("log10 SNR", "log10 SNR / s_max (Spectrum's ranking)"),
        strict=True,
    ):
        grid, present = _grid(blocks, types, layers, key)
        finite = np.isfinite(grid)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(finite & (grid > 0), np.log10(np.where(grid > 0, grid, 1.0)), np.nan)
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
        im = ax.imshow(
            np.ma.masked_invalid(logs), aspect="auto", cmap=cmap, interpolation="nearest"
        )
        special = colors.ListedColormap([NAN_COLOR, INF_COLOR])
        codes = np.full(grid.shape, np.nan)
        codes[present & np.isnan(grid)] = 0
        codes[present & np.isinf(grid)] = 1
        ax.imshow(
            np.ma.masked_invalid(codes),
            aspect="auto",
            cmap=special,
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        counts["nan"] = max(counts["nan"], int((codes == 0).sum()))
        counts["inf"] = max(counts["inf"], int((codes == 1).sum()))
        ax.set_yticks(range(len(types)), types, fontsize=8)
        step = max(1, math.ceil(layers / 32))
        ax.set_xticks(range(0, layers, step), [str(i) for i in range(0, layers, step)], fontsize=7)
        ax.set_xlabel("layer")
        ax.set_title(label, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    fig.suptitle(title or f"Spectral scan of {result.source}", fontsize=11)
    caption = (
        f"grey: SNR undefined (NaN: non-finite or all-zero weights), {counts['nan']} cells;"
        f"  black: SNR = ∞ (no singular value at or below the MP threshold τ), "
        f"{counts['inf']} cells;  white: not scanned.  Matrices outside the blocks "
        "(embeddings, head) and norm scales are in the table and CSV."
    )
    fig.text(0.01, 0.005, caption, fontsize=7, ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    return save_figure(fig, Path(path))
