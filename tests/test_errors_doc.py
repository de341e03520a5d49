"""docs/errors.md is true: each quoted message is raised, word for word, by the row's example, and
each row names a test that exists."""

from __future__ import annotations

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx
from adaptive_tx.ftrl_proximal import FtrlHyperparams, ftrl_rule
from adaptive_tx.rule import apply_rule
from tests.cases import make_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "errors.md"

PARAMS = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}


def _adam_update(grads):
    tx = atx.adam(0.1)
    return tx.update(grads, tx.init(PARAMS))


def _weight_decay_with_other_params():
    tx = atx.add_decoupled_weight_decay(0.1)
    return tx.update({"w": jnp.zeros(2)}, tx.init(None), {"v": jnp.zeros(2)})


def _restored_into_another_optimizer():
    params = make_params()
    written = atx.adam(0.1, mu_dtype=jnp.bfloat16).init(params)
    return atx.check_restored_state(atx.adam(0.1), params, written)


def _restored_without_a_target():
    params = make_params()
    state = atx.adam(0.1).init(params)
    as_saved = [s._asdict() for s in state]  # what orbax gives back without a target
    return atx.check_restored_state(atx.adam(0.1), params, as_saved)


def _restored_for_other_shapes():
    params = make_params()
    tx = atx.skip_nonfinite(atx.adam(0.1))
    return atx.check_restored_state(tx, {**params, "w": jnp.zeros((4, 6))}, tx.init(params))


def _eager_guard_limit():
    tx = atx.skip_nonfinite(atx.adamw(0.1), max_consecutive_errors=2)
    params, nan = {"w": jnp.ones(2)}, {"w": jnp.full(2, jnp.nan)}
    _, state = tx.update(nan, tx.init(params), params)
    return tx.update(nan, state, params)


def _adam_rows(indices, num_rows=10):
    table = {"emb": jnp.ones((10, 3))}
    tx = atx.adam(0.1)
    g = {"emb": atx.RowSparse(indices, jnp.ones((len(indices), 3)), num_rows)}
    return tx.update(g, tx.init(table), table)


def _rows_through(tx):
    table = {"emb": jnp.ones((10, 3))}
    g = {"emb": atx.RowSparse([3, 7], jnp.ones((2, 3)), 10)}
    return tx.update(g, tx.init(table), table)


def _rates_of_groups(groups, labels):
    state = optax.multi_transform(groups, labels).init(PARAMS)
    return jax.jit(atx.effective_learning_rate)(state)  # raises while tracing: nothing compiled


def _row_sparse_with_storage(shape, **storage):
    params = {"emb": jnp.ones(shape)}
    tx = atx.adam(0.1, **storage)
    g = {"emb": atx.RowSparse([5], jnp.ones((1,) + shape[1:]), shape[0])}
    return tx.update(g, tx.init(params), params)


def _row_sharded(axis="rows", devices=1, shape=(10, 3), **options):
    if devices == 1:
        mesh = jax.make_mesh((1,), ("rows",), axis_types=(jax.sharding.AxisType.Auto,))
    else:  # checked before any device is used: an abstract mesh stands for 4 devices
        mesh = jax.sharding.AbstractMesh((devices,), ("rows",))
    return atx.sparse.row_sharded(atx.adam(0.1), {"emb": jnp.ones(shape)}, mesh, axis, **options)


def _row_sharded_step(grads, devices=1, shape=(10, 3)):
    sharded = _row_sharded(devices=devices, shape=shape)
    table = {"emb": jnp.ones(shape)}
    state = sharded.init(table) if devices == 1 else None
    return sharded.step(table, state, grads)


def _complex_with_real_mu_dtype():
    params = {"z": jnp.ones(3, jnp.complex64)}
    tx = atx.adam(0.1, mu_dtype=jnp.bfloat16)
    return tx.update(params, tx.init(params), params)


def _adopt_on_complex():
    params = {"z": jnp.ones(3, jnp.complex64)}
    tx = atx.adopt(0.1)
    return tx.update(params, tx.init(params), params)


def _catch_up_without_params():
    tx, table = atx.sparse.catch_up(atx.adam, 0.1), {"emb": jnp.ones((3, 2))}
    return tx.update(table, tx.init(table))


def _catch_up_view_of_another_table():
    tx, table = atx.sparse.catch_up(atx.adam, 0.1), {"emb": jnp.ones((3, 2))}
    return tx.view(tx.init(table))(("other",), table["emb"], jnp.array([0]))


def _catch_up_state_missing():
    tx, table = atx.sparse.catch_up(atx.adam, 0.1), {"emb": jnp.ones((3, 2))}
    return tx.view(atx.adam(0.1).init(table))


def _catch_up_states_two():
    tx, params = atx.sparse.catch_up(atx.adam, 0.1), {"emb": jnp.ones((3, 2)), "w": jnp.ones(2)}
    other = atx.sparse.catch_up(atx.adam, 0.2)
    both = optax.partition({"a": tx, "b": other}, {"emb": "a", "w": "b"})
    return tx.flush(both.init(params), params)


def _catch_up_rows_of_another_group():
    tx, params = atx.sparse.catch_up(atx.adam, 0.1), {"emb": jnp.ones((3, 2)), "w": jnp.ones(2)}
    groups = optax.partition({"a": tx, "b": atx.adam(0.1)}, {"emb": "a", "w": "b"})
    return tx.rows(groups.init(params), params, {"emb": None, "w": jnp.array([0])})


def _flush_a_chain_without_its_catch_up():
    from flax import nnx

    embed = atx.sparse.Embed(3, 2, rngs=nnx.Rngs(0))
    tx = optax.chain(atx.sparse.clip_by_global_norm(1.0), atx.sparse.catch_up(atx.adam, 0.1))
    return atx.sparse.flush(nnx.Optimizer(embed, tx, wrt=nnx.Param), embed)


def _flush_a_lazy_optimizer():
    from flax import nnx

    embed = atx.sparse.Embed(3, 2, rngs=nnx.Rngs(0))
    return atx.sparse.flush(nnx.Optimizer(embed, atx.adam(0.1), wrt=nnx.Param), embed)


def _adadelta_update(grads):
    params = {"w": jnp.ones(3)}
    tx = atx.adadelta(1.0)
    return tx.update(grads, tx.init(params), params)


def _schedule_free_update(grads, with_params=True):
    tx = atx.schedule_free_adamw(0.1)
    return tx.update(grads, tx.init(PARAMS), PARAMS if with_params else None)


# The example of every row whose result is an exception, by the row's ID.
RAISES = {
    "lr-negative": lambda: atx.adam(-0.1),
    "lr-nan": lambda: atx.adam(float("nan")),
    "lr-none": lambda: atx.adam(None),
    "b1-one": lambda: atx.adam(0.1, b1=1.0),
    "decay-one": lambda: atx.rmsprop(0.1, decay=1.0),
    "momentum-large": lambda: atx.rmsprop(0.1, momentum=1.2),
    "eps-negative": lambda: atx.adam(0.1, eps=-1e-8),
    "accumulator-negative": lambda: atx.adagrad(0.1, initial_accumulator_value=-0.1),
    "weight-decay-negative": lambda: atx.adamw(0.1, weight_decay=-1e-4),
    "array-hyperparameter": lambda: atx.adam(jnp.ones(3)),
    "integer-state-dtype": lambda: atx.scale_by_bias_corrected_moments(mu_dtype=jnp.int32),
    "injected-b1": lambda: optax.inject_hyperparams(atx.adam)(learning_rate=0.1, b1=1.5).init(
        PARAMS
    ),
    "b2-rounds-to-one": lambda: atx.adam(0.1, b2=1 - 1e-9),
    "lr-inf": lambda: atx.adam(float("inf")),
    "weight-decay-inf": lambda: atx.adamw(0.1, weight_decay=float("inf")),
    "eps-inf": lambda: atx.adam(0.1, eps=float("inf")),
    "accumulator-inf": lambda: atx.adagrad(0.1, initial_accumulator_value=float("inf")),
    "threshold-nan": lambda: atx.radam(0.1, threshold=float("nan")),
    "threshold-inf": lambda: atx.radam(0.1, threshold=float("inf")),
    "threshold-below-four": lambda: atx.radam(0.1, threshold=-5.0),
    "clipping-threshold-zero": lambda: atx.adafactor(clipping_threshold=0.0),
    "nesterov-without-momentum": lambda: atx.rmsprop(0.1, nesterov=True),
    "guard-limit-zero": lambda: atx.skip_nonfinite(atx.adam(0.1), max_consecutive_errors=0),
    "guard-limit-float": lambda: atx.skip_nonfinite(atx.adam(0.1), max_consecutive_errors=1.5),
    "torch-positional-params": lambda: atx.compat.torch.AdamW(PARAMS, lr=1e-3),
    "extra-gradient-leaf": lambda: _adam_update({**PARAMS, "extra": jnp.zeros(1)}),
    "gradient-shape": lambda: _adam_update({"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)}),
    "weight-decay-no-params": lambda: atx.adamw(0.1).update(PARAMS, atx.adamw(0.1).init(PARAMS)),
    "weight-decay-params-tree": _weight_decay_with_other_params,
    "integer-params": lambda: atx.adam(0.1).init({"w": jnp.zeros(2), "step": jnp.int32(0)}),
    "restore-no-target": _restored_without_a_target,
    "restore-wrong-dtype": _restored_into_another_optimizer,
    "restore-wrong-shape": _restored_for_other_shapes,
    "limit-eager": _eager_guard_limit,
    "row-index-too-large": lambda: _adam_rows([3, 10, 4]),
    "row-index-negative": lambda: _adam_rows([3, -1, 4]),
    "row-table-size": lambda: _adam_rows([0], num_rows=11),
    "row-float-indices": lambda: atx.RowSparse(jnp.array([0.5]), jnp.ones((1, 3)), 10),
    "row-indices-mapped": lambda: _rows_through(optax.chain(optax.clip(0.5), atx.adam(0.1))),
    "row-indices-changed": lambda: atx.sparse.apply_updates(
        {"emb": jnp.ones((10, 3))},
        jax.tree.map(jnp.zeros_like, {"emb": atx.RowSparse([3, 7], jnp.ones((2, 3)), 10)}),
    ),
    "row-on-values-state": lambda: atx.sparse.on_values(optax.trace(0.9)).init(
        {"emb": jnp.ones((10, 3))}
    ),
    "row-index-int64": lambda: atx.RowSparse(np.array([2**32 + 3]), jnp.ones((1, 3)), 10),
    "row-unique-repeated": lambda: atx.RowSparse(
        [2, 2], jnp.ones((2, 3)), 10, unique_indices=True
    ),
    "row-dense-sum-negative": lambda: jnp.ones((10, 3))
    + atx.RowSparse([1, -1], jnp.ones((2, 3)), 10),
    "multi-steps-k": lambda: atx.sparse.multi_steps(atx.adam(0.1), every_k=0),
    "rate-no-adaptive-state": lambda: atx.effective_learning_rate(optax.sgd(0.1).init(PARAMS)),
    "rate-group-two-primitives": lambda: _rates_of_groups(
        {"a": optax.chain(atx.scale_by_sum_of_squares(), atx.adam(0.1)), "b": atx.adam(0.1)},
        {"w": "a", "b": "b"},
    ),
    "rate-frozen-group-no-params": lambda: _rates_of_groups(
        {"a": atx.adam(0.1), "f": optax.set_to_zero()}, {"w": "a", "b": "f"}
    ),
    "row-storage-int8-vector": lambda: _row_sparse_with_storage((4096,), nu_dtype="int8_blockwise"),
    "row-storage-fp8-vector": lambda: _row_sparse_with_storage(
        (4096,), nu_dtype="float8_e4m3fn_blockwise"
    ),
    "float8-dtype": lambda: atx.adam(0.1, nu_dtype=atx.Float8Blockwise("float16")).init(PARAMS),
    "state-dtype-bare-float8": lambda: atx.adam(0.1, mu_dtype=jnp.float8_e4m3fn),
    "row-storage-factored": lambda: _row_sparse_with_storage((10, 3), nu_dtype=atx.Factored(2)),
    "row-sharded-axis": lambda: _row_sharded(axis="data"),
    "row-sharded-table-rows": lambda: _row_sharded(devices=4),
    "row-sharded-dense-leaf": lambda: _row_sharded_step({"emb": jnp.ones((8, 3))}, shape=(8, 3)),
    "row-sharded-batch": lambda: _row_sharded_step(
        {"emb": atx.RowSparse([1, 2, 3], jnp.ones((3, 3)), 8)}, devices=4, shape=(8, 3)
    ),
    "row-sharded-bad-index": lambda: _row_sharded_step(
        {"emb": atx.RowSparse([3, 10], jnp.ones((2, 3)), 10)}
    ),
    "ftrl-schedule": lambda: atx.ftrl(optax.constant_schedule(0.1)),
    "ftrl-power-positive": lambda: atx.ftrl(0.1, learning_rate_power=0.5),
    "ftrl-no-params": lambda: atx.ftrl(0.1).update(PARAMS, atx.ftrl(0.1).init(PARAMS)),
    "rule-gives-without-reads": lambda: atx.dense_transformation(
        atx.Rule((), lambda g, s, t: s, lambda g, s, t: g, lambda s, t: 1.0, gives_params=True),
        optax.EmptyState,
    ),
    "apply-rule-no-param": lambda: apply_rule(
        ftrl_rule(FtrlHyperparams(0.1, -0.5, 0.1, 0.0, 0.0, 0.0, 0.0)),
        jnp.ones(2),
        (jnp.ones(2), jnp.zeros(2)),
        jnp.int32(1),
    ),
    "row-trust-ratio": lambda: _rows_through(atx.lamb(0.1)),
    "row-sharded-capacity": lambda: _row_sharded(capacity=0),
    "sm3-b2-above-one": lambda: atx.scale_by_sm3(b2=1.5),
    "cover-set-rank": lambda: atx.sm3(0.1).init({"k": jnp.zeros((1, 1, 1, 1, 2))}),
    "row-cover-set": lambda: _rows_through(atx.sm3(0.1)),
    "row-novograd": lambda: _rows_through(atx.novograd(0.1)),
    "novograd-no-params": lambda: atx.novograd(0.1).update(PARAMS, atx.novograd(0.1).init(PARAMS)),
    "schedule-free-b1": lambda: atx.schedule_free_adamw(0.1, b1=0.0),
    "schedule-free-warmup": lambda: atx.schedule_free_adamw(0.1, warmup_steps=0),
    "schedule-free-injected-warmup": lambda: optax.inject_hyperparams(atx.schedule_free_adamw)(
        learning_rate=0.1, warmup_steps=2
    ).init(PARAMS),
    "schedule-free-state-dtype": lambda: atx.schedule_free_adamw(0.1, state_dtype="int8_blockwise"),
    "schedule-free-no-params": lambda: _schedule_free_update(PARAMS, with_params=False),
    "schedule-free-complex-gradient": lambda: _schedule_free_update(
        {"w": jnp.ones((2, 3), jnp.complex64), "b": jnp.zeros(3)}
    ),
    "schedule-free-eval-state": lambda: atx.schedule_free_eval_params(
        atx.adam(0.1).init(PARAMS), PARAMS
    ),
    "complex-real-mu-dtype": _complex_with_real_mu_dtype,
    "complex-gradient-real-params": lambda: _adam_update(
        {"w": jnp.ones((2, 3), jnp.complex64), "b": jnp.zeros(3)}
    ),
    "adadelta-eps-zero": lambda: atx.adadelta(1.0, eps=0.0),
    "adadelta-estimating-storage": lambda: atx.scale_by_adadelta(nu_dtype=atx.Factored(2)),
    "adadelta-complex-gradient": lambda: _adadelta_update({"w": jnp.ones(3, jnp.complex64)}),
    "adadelta-complex-params": lambda: atx.adadelta(1.0).init({"z": jnp.ones(3, jnp.complex64)}),
    "rprop-complex-gradient": lambda: atx.rprop(0.1).update(
        {"w": jnp.ones(3, jnp.complex64)}, atx.rprop(0.1).init({"w": jnp.ones(3)})
    ),
    "rprop-step-bounds": lambda: atx.rprop(0.1, min_step_size=1.0, max_step_size=0.5),
    "torch-rprop-pair": lambda: atx.compat.torch.Rprop(etas=0.5),
    "optax-state-rowwise": lambda: atx.from_optax_state(
        atx.rowwise_adagrad(0.1), PARAMS, optax.adagrad(0.1).init(PARAMS)
    ),
    "optax-state-int8": lambda: atx.from_optax_state(
        atx.adam(0.1, mu_dtype="int8_blockwise"), PARAMS, optax.adam(0.1).init(PARAMS)
    ),
    "optax-state-guard": lambda: atx.from_optax_state(
        atx.skip_nonfinite(atx.adam(0.1)), PARAMS, optax.adam(0.1).init(PARAMS)
    ),
    "optax-state-other-optimizer": lambda: atx.from_optax_state(
        atx.adam(0.1), PARAMS, optax.adagrad(0.1).init(PARAMS)
    ),
    "adopt-eps-zero": lambda: atx.adopt(0.1, eps=0.0),
    "adopt-clip-value-fn": lambda: atx.adopt(0.1, clip_value_fn=0.5),
    "adopt-complex-clipping": _adopt_on_complex,
    "cautious-floor": lambda: atx.cautious(atx.adam(0.1), floor=1.5),
    "cautious-descent-learning-rate": lambda: atx.cautious(atx.adamw(0.1), descent=False).init(
        PARAMS
    ),
    "cautious-row-sparse": lambda: _rows_through(atx.cautious(atx.adam(0.1))),
    "catch-up-alias": lambda: atx.sparse.catch_up(atx.radam, 0.1),
    "catch-up-eps-root": lambda: atx.sparse.catch_up(atx.adam, 0.1, eps_root=1e-8),
    "catch-up-mask": lambda: atx.sparse.catch_up(atx.adamw, 0.1, mask={"emb": True}),
    "catch-up-storage": lambda: atx.sparse.catch_up(atx.adam, 0.1, nu_dtype="int8_blockwise"),
    "catch-up-rho": lambda: atx.sparse.catch_up(atx.adam, 0.1, b1=0.99, b2=0.9),
    "catch-up-no-params": _catch_up_without_params,
    "catch-up-view-table": _catch_up_view_of_another_table,
    "flush-lazy": _flush_a_lazy_optimizer,
    "catch-up-state-missing": _catch_up_state_missing,
    "catch-up-states-two": _catch_up_states_two,
    "catch-up-rows-other-group": _catch_up_rows_of_another_group,
    "flush-nested-catch-up": _flush_a_chain_without_its_catch_up,
}


def _rows() -> list[tuple[str, str, str]]:
    """(ID, result cell, test cell) of every table row of the doc."""
    rows = []
    for line in DOC.read_text().splitlines():
        match = re.match(r"\| `([a-z0-9-]+)` \|(.*)\|(.*)\|(.*)\|\s*$", line)
        if match:
            rows.append((match.group(1), match.group(3).strip(), match.group(4).strip()))
    return rows


ROWS = _rows()


def test_every_example_has_a_row_and_ids_are_unique():
    ids = [row[0] for row in ROWS]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    assert set(RAISES) <= set(ids)
    quoting = {i for i, result, _ in ROWS if re.match(r"`\w+(Error|Exception): ", result)}
    assert quoting == set(RAISES)


@pytest.mark.parametrize("row_id", sorted(RAISES))
def test_documented_message_is_raised_word_for_word(row_id):
    result = next(result for i, result, _ in ROWS if i == row_id)
    documented = re.match(r"`([^`]*)`", result).group(1)
    with pytest.raises(Exception) as error:
        RAISES[row_id]()
    raised = f"{type(error.value).__name__}: {str(error.value).splitlines()[0]}"
    assert raised == documented


@pytest.mark.parametrize("row", ROWS, ids=[row[0] for row in ROWS])
def test_each_row_names_an_existing_test(row):
    path, name = re.fullmatch(r"`([\w/.]+)::(\w+)`", row[2]).groups()
    assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.MULTILINE), f"{path}::{name}"


def test_nan_gradient_without_the_guard_poisons_the_parameter():
    params = {"w": jnp.ones(3)}
    tx = atx.adam(0.1)
    updates, state = tx.update({"w": jnp.array([1.0, jnp.nan, 1.0])}, tx.init(params))
    params = optax.apply_updates(params, updates)
    updates, _ = tx.update({"w": jnp.ones(3)}, state)  # a good step afterwards does not heal it
    params = np.asarray(optax.apply_updates(params, updates)["w"])
    assert np.isnan(params[1]) and np.all(np.isfinite(params[[0, 2]]))
