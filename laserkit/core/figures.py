"""Figures written like every other output: atomically, and byte-identical for the same run."""

from __future__ import annotations

from pathlib import Path

from .fileio import atomic_file


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically, then close it (no timestamp metadata, so the
    same run gives the same bytes)."""
    import matplotlib.pyplot as plt

    try:
        return atomic_file(
            path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
        )
    finally:
        plt.close(fig)
