r"""Catch-up row-sparse updates: the dense trajectory at the cost of the touched rows.

Lazy row-sparse updates (the default, `adaptive_tx.sparse`) leave an untouched row as it is. Dense
training does not: at every step it applies the rule with a zero gradient to that row, so Adam's
moments decay and its momentum keeps moving the row. `catch_up` keeps one int32 per row, the step
at which the row was last brought up to date, and applies the skipped zero-gradient steps of a row
in closed form when the row is read again:

* the statistics: :math:`k` zero-gradient steps of an exponential moving average are one
  multiplication by :math:`\beta^k` (exact); an AMSGrad maximum changes at the first skipped step
  only (the bias-corrected :math:`\beta_2^j v/(1-\beta_2^{s+j})` decreases in :math:`j`);
  Adagrad's sum does not change;
* the parameter: over the skipped steps :math:`\tau = s+1, \dots, s+k` the Adam family moves the
  row by

  .. math::

     \Delta\theta = -m \sum_{j=1}^{\min(k, J)} \frac{a_j}{b_j x + \epsilon}\,
     \prod_{i=j+1}^{k} (1-\eta_{s+i}\lambda_{s+i}),
     \qquad \theta \leftarrow \prod_{i=1}^{k}(1-\eta_{s+i}\lambda_{s+i})\,\theta + \Delta\theta,

  where :math:`a_j / (b_j x + \epsilon)` is the rule's own ``direction * scale`` at step
  :math:`s+j` on the skipped statistics (with :math:`x = \sqrt{v}` the per-element root and
  :math:`a_j, b_j` per row: the rule is evaluated at two points per row and step to read them,
  so the bias corrections and NAdam's look-ahead are the rule's arithmetic, written once),
  :math:`\eta` the learning rate (a schedule is evaluated at every skipped step) and
  :math:`\lambda` the decoupled weight decay. The terms shrink like :math:`\rho^j`,
  :math:`\rho = \beta_1/\sqrt{\beta_2}`; :math:`J` is chosen so that the dropped tail is below
  float32 resolution (`drift_terms`). The per-element sum is evaluated as
  :math:`g(z)/(b_1 x + \epsilon)` with :math:`z = b_1 x / (b_1 x + \epsilon) \in [0, 1]` and
  :math:`g(z) = \sum_j a_j w_j / (1 - z (1 - b_j/b_1))`, a function of the row only, interpolated at
  ``CHEBYSHEV_DEGREE + 1`` Chebyshev nodes per row and evaluated per element by Clenshaw's
  recurrence (see ``tests/test_catch_up.py`` for the measured interpolation error). Every row of
  a step has :math:`s + k = t - 1`, so the node values depend on the gap :math:`k` alone: they
  are tabulated once per step for :math:`k \le J`. A row with a longer gap sums the terms of
  steps :math:`s+1 .. s+J`; with a constant rate and weight decay they equal the tabulated
  row :math:`J`'s (times the decay over the :math:`k - J` further steps) once
  :math:`\beta_1^{s+1}, \beta_2^{s+1} \le 2^{-30}` (the bias corrections
  are then exactly 1 in float32: after about 20,800 steps at :math:`\beta_2 = 0.999`); the
  other long-gap rows are summed one by one;
* RMSProp's momentum (``sparse.trace``) decays by :math:`\mu^k` and moves the row by the
  geometric sum :math:`\sum_{j=1}^k \mu^j b`.

Dense training also moves a row *before* the step that looks it up: for the same trajectory the
forward pass must read the caught-up rows (`CatchUp.rows`, or ``sparse.value_and_grad(..., view=)``
with `CatchUp.view`). Rows that were not looked up since are stale at the end of training:
`CatchUp.flush` brings every row up to date (once, :math:`O(V)`) before evaluation, export or a
checkpoint.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adaptive_tx.sparse._type import RowSparse, is_row_sparse, per_row

CHEBYSHEV_DEGREE = 12
"""The degree of the per-row interpolant of the Adam drift (13 nodes per row)."""

FLUSH_CHUNK = 8192
"""Rows caught up at once by `CatchUp.flush` (its temporary memory is this times J floats)."""


class CatchUpState(NamedTuple):
    r"""State of `catch_up`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      inner: the state of the wrapped optimizer (its statistics of rows not read since their
        ``last_step`` are stale: read them through `CatchUp.flush`).
      last_step: params-shaped tree of int32 arrays of shape ``(V,)`` (one per row of each leaf;
        ``()`` for a scalar leaf): the step at which the row was last brought up to date.
      log_decay: float32 ``(2,)``: :math:`\sum_{\tau \le t} \log(1 - \eta_\tau\lambda_\tau)` as a
        compensated (Kahan) sum, hi and lo; zeros without weight decay.
      decay_mark: params-shaped tree of float32 ``(V, 2)``: ``log_decay`` (hi, lo) at each row's
        last step (None without weight decay). Kept as a pair: the difference of two sums near
        :math:`\eta\lambda t` must stay exact to float32 resolution of the decay over the gap,
        which one float32 per row would not be once :math:`\eta\lambda t \gg 1`.

    Example:
      >>> import adaptive_tx as atx
      >>> tx = atx.sparse.catch_up(atx.adam, 0.1)
      >>> tx.init({"emb": jnp.zeros((4, 2))}).last_step["emb"]
      Array([0, 0, 0, 0], dtype=int32)
    """

    count: jax.Array
    inner: optax.OptState
    last_step: Any
    log_decay: jax.Array
    decay_mark: Any = None


class _Form(NamedTuple):
    """What catch-up needs of an alias: the kind of its statistics and where they are."""

    kind: str  # "none" (Adagrad), "ema" (RMSProp), "moments" (Adam family)
    nesterov: bool = False
    momentum: float | None = None  # RMSProp's trace
    trace_nesterov: bool = False
    decay: float = 0.0  # RMSProp's
    hyperparams: Any = None  # the Adam family's BiasCorrectedMomentsHyperparams


def _moments_form(a: dict) -> _Form:
    """The rule's numbers as `scale_by_bias_corrected_moments` builds them from the alias's."""
    from adaptive_tx.moments import BiasCorrectedMomentsHyperparams

    b1, b2 = float(a["b1"]), float(a["b2"])
    hyperparams = BiasCorrectedMomentsHyperparams(
        b1,
        b2,
        float(a["eps"]),
        0.0,
        bool(a.get("bias_correction_mu", True)),
        bool(a.get("bias_correction_nu", True)),
        one_minus_b1=1 - b1,
        one_minus_b2=1 - b2,
    )
    return _Form("moments", nesterov=bool(a.get("nesterov", False)), hyperparams=hyperparams)


def _alias_forms() -> dict[Callable, Callable[[dict], _Form]]:
    from adaptive_tx import aliases

    moments = _moments_form
    return {
        aliases.adagrad: lambda a: _Form("none"),
        aliases.rowwise_adagrad: lambda a: _Form("none"),
        aliases.rmsprop: lambda a: _Form(
            "ema",
            momentum=a["momentum"],
            trace_nesterov=bool(a["nesterov"]),
            decay=float(a["decay"]),
        ),
        aliases.adam: moments,
        aliases.adamw: moments,
        aliases.nadam: moments,
        aliases.nadamw: moments,
        aliases.amsgrad: moments,
    }


def _check_args(name: str, args: dict) -> None:
    """Refuse the options whose skipped steps have no closed form here (clear errors)."""
    if args.get("eps_root", 0.0) != 0.0:
        raise ValueError(
            f"sparse.catch_up: {name} with eps_root={args['eps_root']!r}: the skipped steps' "
            "drift is summed in closed form for eps_root=0 only (the root of v + eps_root does "
            "not factor out of the sum); use eps_root=0, or lazy updates (the optimizer itself)"
        )
    if args.get("mask") is not None:
        raise ValueError(
            f"sparse.catch_up: {name} with a weight-decay mask: catch-up decays every row of "
            "every leaf it catches up; use mask=None, or put the masked leaves in another "
            "optimizer with optax.multi_transform"
        )
    for key in ("mu_dtype", "nu_dtype"):
        spec = args.get(key)
        if spec is not None and not (
            isinstance(spec, (type, np.dtype, jnp.dtype)) or hasattr(spec, "dtype")
        ):
            raise ValueError(
                f"sparse.catch_up: {name} with {key}={spec!r}: catch-up rescales the rows of "
                "plain float statistics only; use a float dtype (or None) for the statistics"
            )


def drift_terms(b1: float, b2: float) -> int:
    r"""J, the number of skipped steps whose drift `catch_up` sums (the rest is below float32).

    The :math:`j`-th term is at most :math:`\rho^{j-1} / \sqrt{1-\beta_2}` times the first
    (:math:`\rho = \beta_1/\sqrt{\beta_2}`; the factor bounds the growth of the bias correction
    of :math:`v` early in training), so the tail after :math:`J` terms is below
    :math:`2^{-24}` of the first term for

    .. math:: J = \Big\lceil \frac{\log\big(2^{-24}(1-\rho)\sqrt{1-\beta_2}\big)}{\log\rho} \Big\rceil.

    Example:
      >>> drift_terms(0.9, 0.999)
      214
    """
    rho = b1 / math.sqrt(b2)
    if rho <= 0:
        return 1
    if rho >= 1:
        raise ValueError(
            f"sparse.catch_up: b1={b1!r} and b2={b2!r} give rho = b1/sqrt(b2) = {rho:.6g} >= 1: "
            "the skipped steps' drift does not converge; use b1 < sqrt(b2), or lazy updates"
        )
    return max(1, math.ceil(math.log(2.0**-24 * (1 - rho) * math.sqrt(1 - b2)) / math.log(rho)))


def _chebyshev_matrix(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes on [0, 1] (first kind) and the matrix taking node values to coefficients."""
    n = degree + 1
    theta = np.pi * (np.arange(n) + 0.5) / n
    nodes = (1 + np.cos(theta)) / 2
    matrix = 2 / n * np.cos(np.outer(theta, np.arange(n)))  # [node, coefficient]
    matrix[:, 0] /= 2
    return nodes.astype(np.float32), matrix.astype(np.float32)


def _clenshaw(coefficients: jax.Array, z: jax.Array) -> jax.Array:
    """Σ_n c_n T_n(2z − 1), per row coefficients ``[K, N+1]``, elements ``[K, D...]``."""
    w = 2 * z - 1
    shape = (coefficients.shape[0],) + (1,) * (z.ndim - 1)
    c = [coefficients[:, n].reshape(shape) for n in range(coefficients.shape[1])]
    b1 = jnp.zeros_like(z)
    b2 = jnp.zeros_like(z)
    for n in range(len(c) - 1, 0, -1):
        b1, b2 = c[n] + 2 * w * b1 - b2, b1
    return c[0] + w * b1 - b2


def _value(hyperparameter, step):
    """A constant or a schedule's value at 0-based ``step`` (float32)."""
    value = hyperparameter(step) if callable(hyperparameter) else hyperparameter
    return jnp.asarray(value, jnp.float32)


def _leaf_rows(x):
    return jnp.shape(x)[:1]


class CatchUp:
    """The transformation `catch_up` returns: ``init``/``update`` plus the row views.

    It is an Optax transformation (``optax.GradientTransformationExtraArgs``-like: ``init``,
    ``update(updates, state, params)``) for ``nnx.Optimizer`` and training loops, with three more
    functions: `rows` (the caught-up rows a forward pass must read), `view` (the same for
    ``sparse.value_and_grad``) and `flush` (every row up to date).

    Example:
      >>> import adaptive_tx as atx
      >>> tx = atx.sparse.catch_up(atx.adam, 0.1)
      >>> params = {"emb": jnp.ones((3, 1))}
      >>> state = tx.init(params)
      >>> g = {"emb": atx.RowSparse(jnp.array([0]), jnp.ones((1, 1)), 3)}
      >>> u, state = tx.update(g, state, params)
      >>> atx.sparse.apply_updates(params, u)["emb"][:, 0]  # row 0 moved, as dense Adam's would
      Array([0.9, 1. , 1. ], dtype=float32)
    """

    def __init__(self, inner, form: _Form, learning_rate, weight_decay, name: str):
        self.inner = optax.with_extra_args_support(inner)
        self.form = form
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.name = name
        self.num_terms = 1
        self._jitted_flush = jax.jit(self._flush)
        self._jitted_catch_up_rows = jax.jit(self._catch_up_rows)
        self.init = self._init
        self.update = self._update

    # -- state ------------------------------------------------------------------------------
    def _init(self, params):
        last = jax.tree.map(lambda p: jnp.zeros(_leaf_rows(p), jnp.int32), params)
        marks = None
        if self.weight_decay is not None:
            marks = jax.tree.map(lambda p: jnp.zeros(_leaf_rows(p) + (2,), jnp.float32), params)
        return CatchUpState(
            count=jnp.zeros([], jnp.int32),
            inner=self.inner.init(params),
            last_step=last,
            log_decay=jnp.zeros(2, jnp.float32),
            decay_mark=marks,
        )

    def _stat_fields(self, inner_state):
        """The statistics of the scaling state (the chain's first), in the rule's order."""
        scaling = inner_state[0]
        if self.form.kind == "moments":
            fields = ("mu", "nu") + (("nu_max",) if scaling.nu_max is not None else ())
        elif self.form.kind == "ema":
            fields = ("nu",) + (("mu",) if scaling.mu is not None else ())
        else:
            fields = ()
        return scaling, fields

    # -- the closed forms -------------------------------------------------------------------
    def _decay_step(self, step0):
        """log(1 − η λ) at the 0-based step (the factor a zero-gradient step multiplies θ by)."""
        lr = _value(self.learning_rate, step0)
        wd = _value(self.weight_decay, step0)
        return jnp.log1p(-lr * wd)

    def _catch_up_rows(self, stats_rows, trace_rows, theta, s, k, log_p):
        """Rows brought from step ``s`` to ``s + k`` (zero gradients): stats, trace, θ.

        ``stats_rows``: the rows of each statistic; ``theta``: the parameter rows (float32);
        ``s``, ``k``: int32 ``[K]``; ``log_p``: float32 ``[K]``, log Π(1 − ηλ) over the k steps.
        """
        bshape = lambda v: v.reshape(v.shape + (1,) * (theta.ndim - 1))  # noqa: E731
        kb = bshape(k)
        decay = jnp.exp(bshape(log_p))
        new_theta = theta * decay if self.weight_decay is not None else theta
        new_trace = trace_rows
        if self.form.kind == "none":
            return stats_rows, new_trace, new_theta
        if self.form.kind == "ema":
            factor = jnp.asarray(self.form.decay, jnp.float32) ** kb
            new_stats = tuple(s_.astype(jnp.float32) * factor for s_ in stats_rows)
            if trace_rows is not None:
                mom = jnp.float32(self.form.momentum)
                mom_k = mom**kb
                total = mom * (1 - mom_k) / (1 - mom)
                if self.form.trace_nesterov:
                    total = total * mom
                new_theta = new_theta + total * trace_rows.astype(jnp.float32)
                new_trace = trace_rows.astype(jnp.float32) * mom_k
            return new_stats, new_trace, new_theta
        return self._moments(stats_rows, new_theta, s, k, log_p, bshape)

    def _moments(self, stats_rows, theta, s, k, log_p, bshape):
        from adaptive_tx.moments import bias_corrected_moments_rule

        amsgrad = len(stats_rows) == 3
        # The constructor's numbers (Python floats and flags: one branch of each `where`).
        h = self.form.hyperparams
        b1 = jnp.asarray(h.b1, jnp.float32)
        b2 = jnp.asarray(h.b2, jnp.float32)
        kb = bshape(k)
        mu, nu = (x.astype(jnp.float32) for x in stats_rows[:2])
        rule = bias_corrected_moments_rule(h, self.form.nesterov, amsgrad)
        new_stats = [mu * b1**kb, nu * b2**kb]
        if amsgrad:
            # The maximum changes at the first skipped step only (the rule's own step, g = 0).
            first = rule.accumulate(jnp.zeros_like(mu), (mu, nu, stats_rows[2]), bshape(s + 1))
            nu_max = jnp.where(kb > 0, first[2], stats_rows[2].astype(jnp.float32))
            new_stats.append(nu_max)
            root = jnp.sqrt(nu_max)
        else:
            root = jnp.sqrt(nu)
        values, sigma = self._node_values_by_gap(s, k, log_p, amsgrad)
        _, matrix = _chebyshev_matrix(CHEBYSHEV_DEGREE)
        coefficients = values @ matrix
        eps = jnp.asarray(h.eps, jnp.float32)
        sig = bshape(sigma)
        den = sig * root + eps
        z = jnp.where(den > 0, sig * root / jnp.where(den > 0, den, 1.0), 0.0)
        drift = _clenshaw(coefficients, z) / jnp.where(den > 0, den, 1.0)
        new_theta = theta - jnp.where(mu == 0, 0.0, mu * drift)
        return tuple(new_stats), None, new_theta

    def _node_values(self, s, k, log_p, amsgrad):
        """The Chebyshev node values of g and b_1 for rows ``(s, k)`` (vectors): ``[n, N+1]``, ``[n]``.

        ``log_p``: log Π(1 − ηλ) over each row's k steps, or None to sum it here (k <= J only).
        """
        from adaptive_tx.moments import bias_corrected_moments_rule

        h = self.form.hyperparams
        b1 = jnp.asarray(h.b1, jnp.float32)
        b2 = jnp.asarray(h.b2, jnp.float32)
        # a_j and b_j per row: the rule's direction * scale at step s + j on skipped statistics,
        # with eps = 1 and no second moment (a_j), and with eps = 0 and a unit one (a_j / b_j).
        num = self.num_terms
        j = jnp.arange(1, num + 1, dtype=jnp.int32)
        tau = s[:, None] + j[None, :]  # [n, J]
        valid = j[None, :] <= k[:, None]
        ones = jnp.ones(tau.shape, jnp.float32)

        def term(eps, den):
            # A unit first moment: the direction is linear in it (g = 0); beta1^j comes after.
            r = bias_corrected_moments_rule(h._replace(eps=eps), self.form.nesterov, amsgrad)
            if amsgrad:
                stats = (ones, 0 * ones, den * ones)
            else:
                stats = (ones, den * b2 ** j.astype(jnp.float32)[None, :] * ones)
            return r.direction(0 * ones, stats, tau) * r.scale(stats, tau)

        a = term(1.0, 0.0)
        b = a / term(0.0, 1.0)
        a = a * b1 ** j.astype(jnp.float32)[None, :]
        lr = _value(self.learning_rate, tau - 1)
        weight = lr
        if self.weight_decay is not None:
            step_log = jnp.where(valid, self._decay_step(tau - 1), 0.0)
            total = jnp.sum(step_log, axis=1) if log_p is None else log_p
            weight = lr * jnp.exp(total[:, None] - jnp.cumsum(step_log, axis=1))
        a = jnp.where(valid, a * weight, 0.0)
        b = jnp.where(valid, b, 0.0)
        sigma = jnp.max(b, axis=1)  # b_1, the largest
        delta = jnp.where(valid, 1 - b / jnp.where(sigma > 0, sigma, 1.0)[:, None], 0.0)
        nodes, _ = _chebyshev_matrix(CHEBYSHEV_DEGREE)
        values = jnp.sum(a[:, None, :] / (1 - nodes[None, :, None] * delta[:, None, :]), axis=2)
        return values, sigma

    def _node_values_by_gap(self, s, k, log_p, amsgrad):
        """`_node_values` for K rows, computed once per gap where the gaps are short.

        Every row of a step has ``s + k = t - 1``, so a row's node values depend on its gap k
        alone: they are tabulated for k = 0..J (J + 1 rows, whatever K) and gathered. A row with
        a longer gap sums the same J terms at steps ``s + 1 .. s + J``: with a constant rate and
        weight decay they are the tabulated row J's (times the decay over the k - J further
        steps) once the bias corrections are exactly 1
        in float32 (`_settled_step`); the other long-gap rows are computed one by one, up to
        K // 4 of them (all K rows, by the same arithmetic, when there are more).
        """
        num_rows, gap_max = k.shape[0], self.num_terms
        full = lambda: self._node_values(s, k, log_p, amsgrad)  # noqa: E731
        if num_rows < 4 * (gap_max + 1):
            return full()
        room = num_rows // 4
        own = k > gap_max  # rows whose values are not a tabulated row
        settled = self._settled_step()
        if settled is not None:
            own = own & (s + 1 < settled)

        def table():
            gaps = jnp.arange(gap_max + 1, dtype=jnp.int32)
            t_minus_1 = jnp.max(s + k)
            values, sigma = self._node_values(t_minus_1 - gaps, gaps, None, amsgrad)
            row = jnp.minimum(k, gap_max)
            values, sigma = values[row], sigma[row]
            if settled is not None and self.weight_decay is not None:
                # A settled long gap's terms are row J's, each decayed over k - J more steps.
                more = log_p - gap_max * self._decay_step(0)
                values = values * jnp.where(k > gap_max, jnp.exp(more), 1.0)[:, None]
            return values, sigma

        def by_gap():
            values, sigma = table()
            # The rows of `own` (at most `room`), then out-of-range slots (k = 0, dropped).
            slots = jnp.nonzero(own, size=room, fill_value=num_rows)[0]
            get = lambda x: x.at[slots].get(mode="fill", fill_value=0)  # noqa: E731
            far = self._node_values(get(s), get(k), get(log_p), amsgrad)
            put = lambda x, y: x.at[slots].set(y, mode="drop", unique_indices=True)  # noqa: E731
            return put(values, far[0]), put(sigma, far[1])

        count = jnp.sum(own)
        if settled is None:
            return jax.lax.cond(count > room, full, by_gap)
        index = jnp.where(count == 0, 0, jnp.where(count <= room, 1, 2))
        return jax.lax.switch(index, [table, by_gap, full])

    def _settled_step(self):
        r"""The first step from which every skipped step's terms are those of any later step, or
        None: a constant rate and weight decay, and :math:`\beta^\tau \le 2^{-30}` for both
        betas, so that the bias corrections :math:`1 - \beta^\tau` are exactly 1 in float32."""
        h = self.form.hyperparams
        if callable(self.learning_rate) or callable(self.weight_decay):
            return None
        if getattr(h, "momentum_decay", None) is not None:
            return None  # NAdam's momentum schedule depends on the step otherwise too
        steps = [math.ceil(-30 * math.log(2) / math.log(b)) for b in (h.b1, h.b2) if 0 < b < 1]
        return max(steps, default=0)

    # -- gathering, scattering --------------------------------------------------------------
    def _catch_up_leaf(self, state, leaf_index, rows, theta_rows, t_minus_1, log_g):
        """Gather the stats of ``rows`` of one leaf, catch them up to ``t_minus_1``."""
        scaling, fields = self._stat_fields(state.inner)
        treedef = jax.tree.structure(state.last_step)
        get = lambda tree: treedef.flatten_up_to(tree)[leaf_index]  # noqa: E731
        gather = lambda a: a.at[rows].get(mode="fill", fill_value=0)  # noqa: E731
        stats_rows = tuple(gather(get(getattr(scaling, f))) for f in fields)
        trace_rows = None
        if self.form.momentum is not None:
            trace_rows = gather(get(state.inner[-1].trace))
        last = get(state.last_step)
        s = gather(last)
        # Empty or out-of-range slots (gathered as zeros) have nothing to catch up.
        in_range = (rows >= 0) & (rows < last.shape[0])
        k = jnp.where(in_range, jnp.maximum(t_minus_1 - s, 0), 0)
        log_p = jnp.zeros(k.shape, jnp.float32)
        if self.weight_decay is not None:
            mark = gather(get(state.decay_mark))
            log_p = jnp.where(k > 0, (log_g[0] - mark[:, 0]) + (log_g[1] - mark[:, 1]), 0.0)
        # Jitted (inlined under an outer jit): eager calls would dispatch it op by op. Only the
        # gathered rows go in: a whole statistic passed in would be copied before the update
        # that writes it in place.
        return self._jitted_catch_up_rows(
            stats_rows, trace_rows, theta_rows.astype(jnp.float32), s, k, log_p
        )

    def _unchanged(self, state, leaf_index, theta_rows):
        """What `_catch_up_leaf` returns for a leaf whose rows are all current (same dtypes)."""
        scaling, fields = self._stat_fields(state.inner)
        treedef = jax.tree.structure(state.last_step)
        get = lambda tree: treedef.flatten_up_to(tree)[leaf_index]  # noqa: E731
        stats = tuple(get(getattr(scaling, f)).astype(jnp.float32) for f in fields)
        trace = None
        if self.form.momentum is not None:
            trace = get(state.inner[-1].trace).astype(jnp.float32)
        return stats, trace, theta_rows.astype(jnp.float32)

    def rows(self, state: CatchUpState, params: optax.Params, ids: Any) -> Any:
        r"""The caught-up rows that dense training would read: ``params[leaf][ids]``, up to date.

        Nothing is written; rows whose ids are out of range read as zeros. The gradient flows to
        the rows as if they were the table's (the catch-up offset is constant), so ``jax.grad`` of
        a loss of these rows is the row gradient to pack in a `RowSparse`.

        Args:
          state: the `CatchUpState`.
          params: the parameters (stale rows included).
          ids: a tree like ``params`` with an int array of row ids at the leaves to look up and
            None elsewhere.

        Returns:
          A tree like ``ids``: ``ids.shape + row shape`` arrays at the looked-up leaves.

        Example:
          >>> import adaptive_tx as atx
          >>> tx = atx.sparse.catch_up(atx.adam, 0.1)
          >>> params = {"emb": jnp.ones((3, 1))}
          >>> state = tx.init(params)
          >>> g = {"emb": atx.RowSparse(jnp.array([0]), jnp.ones((1, 1)), 3)}
          >>> u, state = tx.update(g, state, params)
          >>> params = atx.sparse.apply_updates(params, u)
          >>> u, state = tx.update({"emb": atx.RowSparse(jnp.array([1]), jnp.ones((1, 1)), 3)},
          ...                      state, params)
          >>> params = atx.sparse.apply_updates(params, u)  # row 0 skipped step 2
          >>> tx.rows(state, params, {"emb": jnp.array([0])})["emb"]  # dense Adam: 0.9 - 0.067
          Array([[0.833]], dtype=float32)
        """
        leaves, treedef = jax.tree.flatten(params)
        id_leaves = treedef.flatten_up_to(ids)
        out = []
        log_g = state.log_decay
        for index, (p, i) in enumerate(zip(leaves, id_leaves)):
            if i is None:
                out.append(None)
                continue
            flat = jnp.reshape(i, (-1,)).astype(jnp.int32)
            stale = p.at[flat].get(mode="fill", fill_value=0)
            _, _, theta = self._catch_up_leaf(state, index, flat, stale, state.count, log_g)
            # The value is the caught-up row; the gradient flows to the row read (identity).
            rows = theta.astype(p.dtype) + (stale - jax.lax.stop_gradient(stale))
            out.append(rows.reshape(jnp.shape(i) + p.shape[1:]))
        return treedef.unflatten(out)

    def view(self, state: CatchUpState) -> Callable:
        """The lookup for ``sparse.value_and_grad(f, view=...)``: ``(path, table, ids) -> rows``.

        ``path`` is the table's state path (a tuple of keys), matched against the paths of the
        leaves of ``state.last_step``.

        Example:
          >>> import adaptive_tx as atx
          >>> tx = atx.sparse.catch_up(atx.adam, 0.1)
          >>> state = tx.init({"emb": jnp.ones((3, 1))})
          >>> tx.view(state)(("emb",), jnp.ones((3, 1)), jnp.array([2]))
          Array([[1.]], dtype=float32)
        """
        with_paths = jax.tree_util.tree_flatten_with_path(state.last_step)[0]
        index_of = {_path_key(path): i for i, (path, _) in enumerate(with_paths)}

        def lookup(path, table, ids):
            key = _path_key(path)
            if key not in index_of:
                raise ValueError(
                    f"sparse.catch_up view: no table {path!r} in the optimizer state (its tables: "
                    f"{sorted(index_of)}); pass the path of the table (nnx: the module path plus "
                    "'embedding') that the optimizer was built for"
                )
            flat = jnp.reshape(ids, (-1,)).astype(jnp.int32)
            stale = jnp.take(table, flat, axis=0)
            _, _, theta = self._catch_up_leaf(
                state, index_of[key], flat, stale, state.count, state.log_decay
            )
            rows = theta.astype(table.dtype) + (stale - jax.lax.stop_gradient(stale))
            return rows.reshape(jnp.shape(ids) + table.shape[1:])

        return lookup

    # -- update -----------------------------------------------------------------------------
    def _update(self, updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(
                "sparse.catch_up needs the params (the skipped steps move the rows): call "
                "update(updates, state, params)"
            )
        t = optax.safe_increment(state.count)
        t_minus_1 = state.count
        log_g = state.log_decay
        leaves, treedef = jax.tree.flatten(updates, is_leaf=is_row_sparse)
        p_leaves = treedef.flatten_up_to(params)
        scaling, fields = self._stat_fields(state.inner)
        stat_leaves = {f: treedef.flatten_up_to(getattr(scaling, f)) for f in fields}
        trace_leaves = None
        if self.form.momentum is not None:
            trace_leaves = treedef.flatten_up_to(state.inner[-1].trace)
        last = treedef.flatten_up_to(state.last_step)
        marks = None if state.decay_mark is None else treedef.flatten_up_to(state.decay_mark)
        offsets = []
        new_last, new_marks = [], []
        for index, g in enumerate(leaves):
            p = p_leaves[index]
            if is_row_sparse(g):
                g = leaves[index] = g.coalesce()
                rows = g.indices
                ok = g.in_range()
            elif jnp.ndim(p) >= 1:
                rows = jnp.arange(jnp.shape(p)[0], dtype=jnp.int32)
                ok = jnp.ones(rows.shape, bool)
            else:
                offsets.append(None)
                new_last.append(last[index])
                new_marks.append(None if marks is None else marks[index])
                continue
            theta_rows = p.at[rows].get(mode="fill", fill_value=0)
            catch = functools.partial(self._catch_up_leaf, state, index, rows, theta_rows)
            if is_row_sparse(g):
                caught = catch(t_minus_1, log_g)
            else:
                # A dense gradient: its rows are current unless row-sparse steps left some stale.
                stale = jnp.any(last[index] < t_minus_1)
                caught = jax.lax.cond(
                    stale, catch, lambda *_: self._unchanged(state, index, theta_rows),
                    t_minus_1, log_g,
                )
            new_stats, new_trace, theta = caught
            written, token = _write_order(rows, _leaf_rows(p)[0], g, theta)
            scatter = lambda a, r: a.at[rows].set(  # noqa: E731
                written(r, token).astype(a.dtype), mode="drop", unique_indices=True
            )
            for f, r in zip(fields, new_stats):
                stat_leaves[f][index] = scatter(stat_leaves[f][index], r)
            if new_trace is not None:
                trace_leaves[index] = scatter(trace_leaves[index], new_trace)
            offset = jnp.where(per_row(ok, theta), theta - theta_rows.astype(jnp.float32), 0.0)
            offsets.append((rows, offset, theta, written, token))
            new_last.append(scatter(last[index], jnp.broadcast_to(t, rows.shape)))
            if marks is not None:
                new_marks.append(marks[index])  # set after the step's decay is known
            else:
                new_marks.append(None)
        new_scaling = scaling._replace(
            **{f: treedef.unflatten(stat_leaves[f]) for f in fields}
        )
        inner_state = (new_scaling,) + tuple(state.inner[1:])
        if trace_leaves is not None:
            trace_state = inner_state[-1]._replace(trace=treedef.unflatten(trace_leaves))
            inner_state = inner_state[:-1] + (trace_state,)
        inner_state = type(state.inner)(inner_state) if not isinstance(
            state.inner, tuple
        ) else tuple(inner_state)
        inner_updates, inner_state = self.inner.update(
            treedef.unflatten(leaves), inner_state, params, **extra_args
        )
        u_leaves = treedef.flatten_up_to(inner_updates)
        new_log = log_g
        if self.weight_decay is not None:
            lr_t = _value(self.learning_rate, t_minus_1)
            wd_t = _value(self.weight_decay, t_minus_1)
            # Kahan: hi + lo carries the sum of log(1 - lr wd) to float32 resolution of each term.
            y = self._decay_step(t_minus_1) - log_g[1]
            hi = log_g[0] + y
            lo = (hi - log_g[0]) - y
            new_log = jnp.stack([hi, lo])
        out = []
        for index, (u, extra) in enumerate(zip(u_leaves, offsets)):
            if extra is None:
                out.append(u)
                continue
            rows, offset, theta, written, token = extra
            if self.weight_decay is not None:
                # The step's decay acts on the caught-up θ; the inner step saw the stale one.
                offset = offset * (1 - lr_t * wd_t)
                new_marks[index] = marks[index].at[rows].set(
                    written(jnp.broadcast_to(new_log, (rows.shape[0], 2)), token), mode="drop",
                    unique_indices=True,
                )
            if is_row_sparse(u):
                values = u.values + offset.astype(u.values.dtype)
                out.append(u.with_values(values))
            else:
                out.append(u.at[rows].add(offset.astype(u.dtype), mode="drop"))
        return treedef.unflatten(out), CatchUpState(
            count=t,
            inner=inner_state,
            last_step=treedef.unflatten(new_last),
            log_decay=new_log,
            decay_mark=None if marks is None else treedef.unflatten(new_marks),
        )

    # -- flush ------------------------------------------------------------------------------
    def flush(self, state: CatchUpState, params: optax.Params):
        """Every row brought up to the state's step: ``(params, state)`` as dense training has them.

        :math:`O(V)` once (in chunks of `FLUSH_CHUNK` rows), for evaluation, export, tied
        weights or a checkpoint that another optimizer will read.

        Example:
          >>> import adaptive_tx as atx
          >>> tx = atx.sparse.catch_up(atx.adam, 0.1)
          >>> params = {"emb": jnp.ones((3, 1))}
          >>> state = tx.init(params)
          >>> for ids in ([0], [1], [1]):
          ...     g = {"emb": atx.RowSparse(jnp.array(ids), jnp.ones((len(ids), 1)), 3)}
          ...     u, state = tx.update(g, state, params)
          ...     params = atx.sparse.apply_updates(params, u)
          >>> params, state = tx.flush(state, params)
          >>> state.last_step["emb"], params["emb"][0]
          (Array([3, 3, 3], dtype=int32), Array([0.7812], dtype=float32))
        """
        return self._jitted_flush(state, params)

    def _flush(self, state: CatchUpState, params: optax.Params):
        leaves, treedef = jax.tree.flatten(params)
        scaling, fields = self._stat_fields(state.inner)
        stat_leaves = {f: treedef.flatten_up_to(getattr(scaling, f)) for f in fields}
        trace_leaves = None
        if self.form.momentum is not None:
            trace_leaves = treedef.flatten_up_to(state.inner[-1].trace)
        last = treedef.flatten_up_to(state.last_step)
        marks = None if state.decay_mark is None else treedef.flatten_up_to(state.decay_mark)
        new_leaves = []
        for index, p in enumerate(leaves):
            if jnp.ndim(p) < 1:
                new_leaves.append(p)
                continue
            num_rows = p.shape[0]
            chunk = min(FLUSH_CHUNK, num_rows)
            padded = -(-num_rows // chunk) * chunk
            blocks = jnp.arange(padded, dtype=jnp.int32).reshape(-1, chunk)

            def one(rows, index=index, p=p):
                theta_rows = p.at[rows].get(mode="fill", fill_value=0)
                return self._catch_up_leaf(
                    state, index, rows, theta_rows, state.count, state.log_decay
                )

            new_stats, new_trace, theta = jax.lax.map(one, blocks)
            flat = lambda x: x.reshape((padded,) + x.shape[2:])[:num_rows]  # noqa: E731
            new_leaves.append(flat(theta).astype(p.dtype))
            for f, r in zip(fields, new_stats):
                stat_leaves[f][index] = flat(r).astype(stat_leaves[f][index].dtype)
            if new_trace is not None:
                trace_leaves[index] = flat(new_trace).astype(trace_leaves[index].dtype)
            last[index] = jnp.full_like(last[index], state.count)
            if marks is not None:
                marks[index] = jnp.broadcast_to(state.log_decay, marks[index].shape)
        new_scaling = scaling._replace(**{f: treedef.unflatten(stat_leaves[f]) for f in fields})
        inner = (new_scaling,) + tuple(state.inner[1:])
        if trace_leaves is not None:
            inner = inner[:-1] + (inner[-1]._replace(trace=treedef.unflatten(trace_leaves)),)
        new_state = state._replace(
            inner=tuple(inner),
            last_step=treedef.unflatten(last),
            decay_mark=None if marks is None else treedef.unflatten(marks),
        )
        return treedef.unflatten(new_leaves), new_state


def _write_order(rows, num_rows, g, theta):
    """``(written, token)``: the rows a step writes, made to depend on every read of the old rows.

    XLA writes a donated table in place only if every read of the old table comes before the
    write in the data flow; otherwise it keeps the old table alive by copying it whole, an
    :math:`O(V)` copy a step. The last step (and decay mark) written is a constant ``t``, and a
    forward read through `CatchUp.rows` / `CatchUp.view` reaches the update only through the
    gradient, so neither is ordered by itself. ``token`` ([K] float32) depends on the gradient
    values and on the caught-up rows (hence on every statistic, last step and mark read);
    ``written(r, token)`` is ``r`` on the rows the scatter writes and the token on the slots it
    drops (out of range), so no written value changes. (`jax.lax.optimization_barrier` does not
    order them: the CPU compiler removes it before copy insertion.)
    """
    values = g.values if is_row_sparse(g) else g
    flat = lambda x: jnp.reshape(x, (x.shape[0], -1))[:, 0].astype(jnp.float32)  # noqa: E731
    token = flat(values) + flat(theta)
    kept = (rows >= 0) & (rows < num_rows)

    def written(r, token):
        return jnp.where(per_row(kept, r), r, per_row(token, r).astype(r.dtype))

    return written, token


def _path_key(path) -> tuple:
    """A path as a tuple of plain keys (dict keys, attribute names, indices)."""
    out = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                entry = getattr(entry, attr)
                break
        out.append(entry)
    return tuple(out)


def catch_up(alias: Callable, *args: Any, **kwargs: Any) -> CatchUp:
    r"""An optimizer whose row-sparse updates equal its dense ones: untouched rows caught up.

    ``catch_up(atx.adamw, 1e-3, weight_decay=1e-2)`` is ``atx.adamw(1e-3, weight_decay=1e-2)``
    with *catch-up* semantics for `RowSparse` gradient leaves instead of lazy ones: each row
    remembers the step it was last brought up to date; when a row is read again after :math:`k`
    skipped steps, the :math:`k` zero-gradient steps dense training would have applied are applied
    in closed form (the moments decay, the parameter drifts and decays, see the module
    docstring), then the current step. Dense gradient leaves are updated as by the alias.

    Lazy stays the default (the alias itself): catch-up costs one int32 per row (one more float32
    with weight decay), about :math:`J \times 14` operations per touched row for the Adam family,
    and a forward pass that reads caught-up rows (`CatchUp.rows` / `CatchUp.view`) and a `flush`
    before evaluation; lazy updates need none of that and are what torch SparseAdam and TF
    LazyAdam compute.

    Supported (closed forms of the skipped steps): ``adagrad``, ``rowwise_adagrad`` (nothing to
    catch up), ``rmsprop`` (centered, momentum, nesterov), ``adam``, ``adamw``, ``nadam``,
    ``nadamw``, ``amsgrad``, with constant or scheduled learning rates and weight decays. Other
    aliases, ``eps_root != 0``, a weight-decay ``mask`` and non-float statistic storage raise
    ``ValueError``. Use it as the whole optimizer (transformations after it would see the
    catch-up offsets as updates); `sparse.clip_by_global_norm` may come before it in a chain.

    Reference: lazy updates, ``torch.optim.SparseAdam``,
    https://pytorch.org/docs/stable/generated/torch.optim.SparseAdam.html ; Adam, Kingma & Ba
    2014, https://arxiv.org/abs/1412.6980

    Args:
      alias: one of the supported optimizers of this library (the function, e.g. ``atx.adam``).
      \*args, \*\*kwargs: its arguments, as the alias takes them.

    Returns:
      A `CatchUp` transformation (``init``, ``update(updates, state, params)``, ``rows``,
      ``view``, ``flush``) whose state is `CatchUpState`.

    Example:
      >>> import adaptive_tx as atx, optax
      >>> params = {"emb": jnp.ones((3, 1))}
      >>> tx, dense = atx.sparse.catch_up(atx.adam, 0.1), optax.adam(0.1)
      >>> state, dense_state, dense_params = tx.init(params), dense.init(params), params
      >>> for ids in ([0], [1], [1], [0]):
      ...     g = {"emb": atx.RowSparse(jnp.array(ids), jnp.ones((1, 1)), 3)}
      ...     u, state = tx.update(g, state, params)
      ...     params = atx.sparse.apply_updates(params, u)
      ...     u, dense_state = dense.update({"emb": g["emb"].todense()}, dense_state)
      ...     dense_params = optax.apply_updates(dense_params, u)
      >>> float(abs(params["emb"][0] - dense_params["emb"][0])[0]) < 1e-6
      True
    """
    forms = _alias_forms()
    name = getattr(alias, "__name__", repr(alias))
    if alias not in forms:
        supported = ", ".join(sorted(f.__name__ for f in forms))
        raise ValueError(
            f"sparse.catch_up: {name} has no closed form for its skipped steps here (catch-up "
            f"supports {supported}); use its lazy row-sparse updates (the optimizer itself) or "
            "dense ones (atx.sparse.prepare_rows(lazy=False) first in the chain)"
        )
    bound = inspect.signature(alias).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    _check_args(name, arguments)
    form = forms[alias](arguments)
    inner = alias(*args, **kwargs)
    weight_decay = arguments.get("weight_decay")
    if isinstance(weight_decay, (int, float)) and weight_decay == 0:
        weight_decay = None
    tx = CatchUp(inner, form, arguments["learning_rate"], weight_decay, name)
    if form.kind == "moments":
        tx.num_terms = drift_terms(float(arguments["b1"]), float(arguments["b2"]))
    return tx
