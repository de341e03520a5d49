r"""Figures of effective learning rates (matplotlib; install the ``plot`` extra).

Each function draws one figure from arrays the diagnostics return
(`adaptive_tx.effective_learning_rate`, `adaptive_tx.effective_learning_rate_summary`) and returns
the `matplotlib.figure.Figure`; saving it is the caller's choice (``fig.savefig(path)``). Rates span
orders of magnitude, so every rate axis is logarithmic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display is needed
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = (
    "rate_bars",
    "rate_histograms",
    "rate_quantiles",
)


def _positive(values: np.ndarray) -> np.ndarray:
    """Rates on a log axis: zeros (coordinates that never moved) are left out."""
    values = np.asarray(values, np.float64).ravel()
    return values[values > 0]


def rate_bars(
    rates: Mapping[str, Sequence[float]],
    coordinate_labels: Sequence[str] | None = None,
    title: str = "Effective learning rate per coordinate",
    colors: Mapping[str, str] | None = None,
) -> Figure:
    r"""Bars of each optimizer's effective learning rate per coordinate (log scale).

    The seeds' live demo: one group of bars per coordinate, one bar per optimizer, so a rare
    coordinate's larger Adagrad/Adam rate is visible next to SGD's single global rate.

    Args:
      rates: optimizer name -> its per-coordinate rates (a flat sequence, same length for all).
      coordinate_labels: a label per coordinate (default ``θ0, θ1, ...``).
      title: the figure title.
      colors: optimizer name -> matplotlib color (default: the color cycle).

    Returns:
      The figure; each bar is labelled with its value.

    Example:
      >>> fig = rate_bars({'sgd': [0.1, 0.1], 'adagrad': [0.05, 0.8]}, ['common', 'rare'])
      >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
      ['common', 'rare']
    """
    names = list(rates)
    values = np.array([np.asarray(rates[n], np.float64).ravel() for n in names])
    num_coords = values.shape[1]
    labels = coordinate_labels or [f"θ{i}" for i in range(num_coords)]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 + 0.45 * num_coords * len(names)), 4.5))
    width = 0.8 / len(names)
    x = np.arange(num_coords)
    for i, name in enumerate(names):
        color = (colors or {}).get(name, f"C{i % 10}")
        bars = ax.bar(
            x + (i - (len(names) - 1) / 2) * width, values[i], width, label=name, color=color
        )
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
    ax.set_xticks(x, labels)
    ax.set_yscale("log")
    ax.set_ylabel("effective learning rate (log)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(axis="y", which="major", alpha=0.3)
    fig.tight_layout()
    return fig


def rate_histograms(
    rates: Any, bins: int = 40, title: str = "Effective learning rates per layer"
) -> Figure:
    r"""One histogram of the effective learning rates per parameter leaf, on a log axis.

    Args:
      rates: a tree of rate arrays (the output of `adaptive_tx.effective_learning_rate`).
      bins: the number of logarithmic bins.
      title: the figure title.

    Returns:
      The figure, one panel per leaf, titled with the leaf's path.

    Example:
      >>> import numpy as np
      >>> fig = rate_histograms({'dense': np.logspace(-4, -1, 50), 'embed': np.full(10, 1e-2)})
      >>> [ax.get_title() for ax in fig.axes]
      ['dense', 'embed']
    """
    leaves = [
        (jax.tree_util.keystr(path, simple=True, separator="/"), _positive(leaf))
        for path, leaf in jax.tree_util.tree_leaves_with_path(rates)
    ]
    cols = min(3, len(leaves))
    rows = -(-len(leaves) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, values) in zip(axes.ravel(), leaves):
        if values.size:
            low, high = values.min(), values.max()
            edges = np.geomspace(low, high * (1 + 1e-6) if high > low else low * 1.01, bins + 1)
            ax.hist(values, bins=edges, color="tab:blue", alpha=0.8)
        ax.set_xscale("log")
        ax.set_title(name)
        ax.set_xlabel("effective learning rate (log)")
        ax.set_ylabel("coordinates")
    for ax in axes.ravel()[len(leaves) :]:
        ax.remove()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def rate_quantiles(
    steps: Sequence[int],
    summaries: Sequence[Mapping[str, Any]],
    title: str = "Effective learning rates during training",
) -> Figure:
    r"""The median rate of each layer over training, with its min-max range shaded (log scale).

    Args:
      steps: the training step of each summary.
      summaries: one `adaptive_tx.effective_learning_rate_summary` result per step.
      title: the figure title.

    Returns:
      The figure.

    Example:
      >>> from adaptive_tx.diagnostics import RateSummary
      >>> s = [{'w': RateSummary(1e-3 / t, 1e-2 / t, 1e-1 / t, 2e-2 / t, 0.0)} for t in (1, 2, 3)]
      >>> fig = rate_quantiles([1, 2, 3], s)
      >>> fig.axes[0].get_yscale()
      'log'
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, name in enumerate(summaries[0]):
        color = f"C{i % 10}"
        series = {
            field: np.array([float(getattr(s[name], field)) for s in summaries])
            for field in ("min", "median", "max")
        }
        ax.plot(steps, series["median"], color=color, label=f"{name} (median)")
        ax.fill_between(steps, series["min"], series["max"], color=color, alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("effective learning rate (log)")
    ax.set_title(title + "\n(lines: median per layer; bands: min to max)")
    ax.legend(fontsize="small", loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
