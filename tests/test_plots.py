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
