r"""The skipped steps of catch-up row-sparse updates (`catch_up`), in closed form.

Dense training applies the rule with a zero gradient to every row a step does not touch. A
row brought up to date at step :math:`s` and read again at step :math:`s + k + 1` has skipped
:math:`k` such steps; `Drift` applies them to its gathered rows at once:

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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

CHEBYSHEV_DEGREE = 12
"""The degree of the per-row interpolant of the Adam drift (13 nodes per row)."""


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



class Drift:
    """The skipped zero-gradient steps of one optimizer, in closed form, on gathered rows.

    Built by `catch_up` from the alias's numbers: ``form`` (what its statistics are),
    ``learning_rate`` and ``weight_decay`` (constants or schedules) and ``num_terms`` (J).

    Example:
      >>> import adaptive_tx as atx
      >>> drift = atx.sparse.catch_up(atx.rmsprop, 0.1, decay=0.5).drift
      >>> (nu,), _, theta = drift.catch_up_rows(
      ...     (jnp.ones((1, 1)),), None, jnp.ones((1, 1)), jnp.array([0]), jnp.array([2]),
      ...     jnp.zeros(1))
      >>> nu  # two zero-gradient steps: decay**2
      Array([[0.25]], dtype=float32)
    """

    def __init__(self, form: _Form, learning_rate, weight_decay, num_terms: int = 1):
        self.form = form
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.num_terms = num_terms

    def decay_step(self, step0):
        """log(1 − η λ) at the 0-based step (the factor a zero-gradient step multiplies θ by)."""
        lr = _value(self.learning_rate, step0)
        wd = _value(self.weight_decay, step0)
        return jnp.log1p(-lr * wd)

    def catch_up_rows(self, stats_rows, trace_rows, theta, s, k, log_p):
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
            step_log = jnp.where(valid, self.decay_step(tau - 1), 0.0)
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
                more = log_p - gap_max * self.decay_step(0)
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

