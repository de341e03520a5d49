"""The figures of adaptive_tx.plots, drawn from real optimizer states."""

import jax
import numpy as np

import adaptive_tx as atx
from adaptive_tx import plots
from tests.cases import gradient_stream, make_params


def _states(steps=12):
    tx = atx.adagrad(0.1, initial_accumulator_value=0.0)
    params, grads = make_params(), gradient_stream(steps)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for g in grads:
        _, state = update(g, state)
        yield state


def test_histograms_one_log_panel_per_leaf(tmp_path):
    state = list(_states())[-1]
    fig = plots.rate_histograms(atx.effective_learning_rate(state))
    assert sorted(ax.get_title() for ax in fig.axes) == ["b", "emb", "w"]
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    # emb rows that never saw a gradient have rate 0: left off the log axis, the rest is drawn
    touched = 3 * int(np.any([np.any(g["emb"] != 0, axis=1) for g in gradient_stream(12)], 0).sum())
    counts = {ax.get_title(): sum(p.get_height() for p in ax.patches) for ax in fig.axes}
    assert counts == {"w": 24, "b": 4, "emb": touched} and touched < 30
    fig.savefig(tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 5_000


def test_quantiles_band_per_layer():
    summaries = [atx.effective_learning_rate_summary(s) for s in _states()]
    fig = plots.rate_quantiles(list(range(1, 13)), summaries)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["b (median)", "emb (median)", "w (median)"]
    medians = ax.lines[2].get_ydata()
    assert np.all(np.diff(medians) <= 0)  # Adagrad's rates only shrink


def test_import_leaves_the_backend_and_pyplot_alone(monkeypatch):
    """A notebook's or a GUI's backend stays; the figures do not go through pyplot."""
    import importlib

    import matplotlib

    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        importlib.reload(plots)
        assert matplotlib.get_backend() == "svg"
        fig = plots.rate_bars({"sgd": [0.1, 0.2]})
        assert fig.canvas.manager is None  # not registered with pyplot (no plt.close needed)
    finally:
        matplotlib.use(previous)


def _nested_rates():
    params = {"layers": {"kernel": np.ones((2, 2), np.float32), "bias": np.ones(1, np.float32)}}
    grads = {"layers": {"kernel": np.array([[1.0, 0.1], [2.0, 0.0]], np.float32),
                        "bias": np.array([0.5], np.float32)}}
    rates = {}
    for name in ("adagrad", "rmsprop"):
        tx = getattr(atx, name)(0.1)
        _, state = tx.update(grads, tx.init(params))
        rates[name] = atx.effective_learning_rate(state)
    return rates


def test_rate_bars_takes_trees_shaped_like_the_parameters(tmp_path):
    rates = _nested_rates()
    fig = plots.rate_bars(rates)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["layers/bias", "layers/kernel[0]", "layers/kernel[1]", "layers/kernel[2]",
                      "layers/kernel[3]"]
    heights = [p.get_height() for p in ax.patches]
    expected = [np.concatenate([np.ravel(r["layers"]["bias"]), np.ravel(r["layers"]["kernel"])])
                for r in rates.values()]
    np.testing.assert_allclose(heights, np.concatenate(expected), rtol=1e-6)
    fig.savefig(tmp_path / "bars.png")
    try:
        plots.rate_bars({"a": [1.0, 2.0], "b": [1.0]})
    except ValueError as error:
        assert "every optimizer needs as many rates" in str(error)
    else:
        raise AssertionError("rate_bars accepted rates of different sizes")


def _overlaps(fig, ax):
    """Pairs of visible x tick labels of ``ax`` whose boxes overlap, once drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    low, high = ax.get_xlim()
    boxes = [
        t.get_window_extent()
        for tick, t in zip(ax.xaxis.get_major_ticks() + ax.xaxis.get_minor_ticks(),
                           ax.get_xticklabels() + ax.get_xticklabels(minor=True))
        if t.get_text() and low <= tick.get_loc() <= high
    ]
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)], boxes


def test_histogram_of_a_one_coordinate_leaf_has_readable_ticks(tmp_path):
    fig = plots.rate_histograms({"scale": np.array([3e-3]), "w": np.logspace(-4, -1, 30)})
    for ax in fig.axes:
        overlapping, boxes = _overlaps(fig, ax)
        assert len(boxes) >= 2 and not overlapping, ax.get_title()
    fig.savefig(tmp_path / "hist.png")


def test_without_matplotlib_the_error_names_the_plot_extra(monkeypatch):
    import importlib
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "adaptive_tx.plots")
    try:
        importlib.import_module("adaptive_tx.plots")
    except ModuleNotFoundError as error:
        assert "pip install 'adaptive_tx[plot]'" in str(error) and error.name == "matplotlib"
    else:
        raise AssertionError("adaptive_tx.plots imported without matplotlib")
