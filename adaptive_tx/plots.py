r"""Figures of effective learning rates (matplotlib; install the ``plot`` extra).

Each function draws one figure from arrays the diagnostics return
(`adaptive_tx.effective_learning_rate`, `adaptive_tx.effective_learning_rate_summary`) and returns
the `matplotlib.figure.Figure`; saving it is the caller's choice (``fig.savefig(path)``), and a
notebook shows it as the cell's value. The figures are made without ``pyplot``: importing this
module leaves matplotlib's backend (a notebook's, a GUI's) as it was. Rates span orders of
magnitude, so every rate axis is logarithmic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import chex
import jax
import numpy as np

try:
    from matplotlib.figure import Figure
except ModuleNotFoundError as error:  # pragma: no cover - exercised with matplotlib hidden
    raise ModuleNotFoundError(
        "adaptive_tx.plots needs matplotlib, which is not installed: "
        "pip install 'adaptive_tx[plot]' (or pip install matplotlib)",
        name="matplotlib",
    ) from error

from adaptive_tx.diagnostics import RateSummary

__all__ = (
    "rate_bars",
    "rate_histograms",
    "rate_quantiles",
)


def _positive(values: np.ndarray) -> np.ndarray:
    """Rates on a log axis: zeros (coordinates that never moved) are left out."""
    values = np.asarray(values, np.float64).ravel()
    return values[values > 0]


def _flat_rates(name: str, rates: chex.ArrayTree) -> tuple[np.ndarray, list[str]]:
    """The rates of one optimizer as one flat array, with a label per coordinate.

    A sequence of numbers or an array is taken as it is (labels ``θ0, θ1, ...``); any other tree
    (the output of `adaptive_tx.effective_learning_rate`) is flattened leaf by leaf, each
    coordinate labelled by its leaf's path (and its index in the leaf when the leaf has several).
    """
    if isinstance(rates, (list, tuple)) or hasattr(rates, "shape"):
        values = np.asarray(rates, np.float64).ravel()
        return values, [f"θ{i}" for i in range(values.size)]
    values, labels = [], []
    for path, leaf in jax.tree_util.tree_leaves_with_path(rates):
        leaf = np.asarray(leaf, np.float64).ravel()
        key = jax.tree_util.keystr(path, simple=True, separator="/") or name
        values.append(leaf)
        labels += [key] if leaf.size == 1 else [f"{key}[{i}]" for i in range(leaf.size)]
    return np.concatenate(values) if values else np.zeros(0), labels


def rate_bars(
    rates: Mapping[str, chex.ArrayTree],
    coordinate_labels: Sequence[str] | None = None,
    title: str = "Effective learning rate per coordinate",
    colors: Mapping[str, str] | None = None,
) -> Figure:
    r"""Bars of each optimizer's effective learning rate per coordinate (log scale).

    One group of bars per coordinate, one bar per optimizer, so that a rare coordinate's larger
    Adagrad or Adam rate stands next to SGD's single global rate. Meant for a few coordinates
    (a small model, or a selection); `rate_histograms` shows whole layers.

    Args:
      rates: optimizer name -> its per-coordinate rates: a flat sequence or array, or a tree
        shaped like the parameters (`adaptive_tx.effective_learning_rate`'s output), the same
        number of coordinates for every optimizer.
      coordinate_labels: a label per coordinate (default: ``θ0, θ1, ...`` for flat rates, the
        leaf's path, with the index inside the leaf, for trees).
      title: the figure title.
      colors: optimizer name -> matplotlib color (default: the color cycle).

    Returns:
      The figure; each bar is labelled with its value.

    Raises:
      ValueError: if the optimizers' rates have different numbers of coordinates, or
        ``coordinate_labels`` has another length.

    Example:
      >>> fig = rate_bars({'sgd': [0.1, 0.1], 'adagrad': [0.05, 0.8]}, ['common', 'rare'])
      >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
      ['common', 'rare']
      >>> import numpy as np
      >>> fig = rate_bars({'adagrad': {'layer': {'bias': np.array([0.2, 0.3]), 'scale': np.ones(1)}}})
      >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
      ['layer/bias[0]', 'layer/bias[1]', 'layer/scale']
    """
    names = list(rates)
    flat = [_flat_rates(name, rates[name]) for name in names]
    sizes = {name: values.size for name, (values, _) in zip(names, flat)}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"rate_bars: every optimizer needs as many rates, got sizes {sizes}")
    values = np.array([v for v, _ in flat])
    num_coords = values.shape[1]
    labels = list(coordinate_labels) if coordinate_labels is not None else flat[0][1]
    if len(labels) != num_coords:
        raise ValueError(
            f"rate_bars: coordinate_labels has {len(labels)} labels for {num_coords} coordinates"
        )
    fig = Figure(figsize=(max(7.0, 1.6 + 0.45 * num_coords * len(names)), 4.5))
    ax = fig.subplots()
    width = 0.8 / len(names)
    x = np.arange(num_coords)
    for i, name in enumerate(names):
        color = (colors or {}).get(name, f"C{i % 10}")
        bars = ax.bar(
            x + (i - (len(names) - 1) / 2) * width, values[i], width, label=name, color=color
        )
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
    ax.set_xticks(x, labels, rotation=30 if max(map(len, labels), default=0) > 6 else 0,
                  ha="right" if max(map(len, labels), default=0) > 6 else "center")
    ax.set_yscale("log")
    ax.set_ylabel("effective learning rate (log)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(axis="y", which="major", alpha=0.3)
    fig.tight_layout()
    return fig


def rate_histograms(
    rates: chex.ArrayTree, bins: int = 40, title: str = "Effective learning rates per layer"
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
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, values) in zip(axes.ravel(), leaves):
        ax.set_xscale("log")
        if values.size:
            low, high = values.min(), values.max()
            if high < 1.5 * low:  # (nearly) one value: one bin wide enough to be seen
                edges = np.array([low / 1.25, high * 1.25])
            else:
                edges = np.geomspace(low, high * (1 + 1e-6), bins + 1)
            ax.hist(values, bins=edges, color="tab:blue", alpha=0.8)
            if high < 100 * low:  # a narrow range (one coordinate): a decade each side, so the
                ax.set_xlim(low / 10, high * 10)  # log axis has decade ticks, not crowded ones
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
    summaries: Sequence[Mapping[str, RateSummary]],
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
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
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
