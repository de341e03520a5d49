"""Presets that reproduce other frameworks' optimizers step for step, built from this library.

- `adaptive_tx.compat.torch`: ``torch.optim`` (Adagrad, RMSprop, Adam, AdamW, Adamax, NAdam,
  RAdam), with torch's keyword names and defaults.
- `adaptive_tx.compat.keras`: ``keras.optimizers`` of Keras 3 (Adagrad, RMSprop, Adam, AdamW,
  Adamax, Nadam), with keras' keyword names and defaults, clipping and weight decay.

Each preset is a factory named like the framework's class that returns an Optax transformation,
a chain of this library's primitives (with the options that carry the framework's conventions:
where ε sits, ε-hat, AMSGrad's maximum, NAdam's momentum schedule, RAdam's threshold) and of
optax's generic transforms (sign flip, coupled L2, clipping, momentum trace). The update rules
and every difference between optax, torch and keras are tabulated in ``docs/conventions.md``.

Both are imported with ``adaptive_tx`` (neither imports torch nor keras): write
``atx.compat.torch.Adam(...)``, or, in a file that also imports the real ``torch``,
``from adaptive_tx.compat import torch as atx_torch`` (a bare ``from adaptive_tx.compat import
torch`` would shadow it).

Example:
  >>> import jax.numpy as jnp, optax
  >>> from adaptive_tx.compat import torch as atx_torch
  >>> tx = atx_torch.Adam(lr=0.1)
  >>> params = jnp.array([1.0, 1.0])
  >>> updates, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(params), params)
  >>> optax.apply_updates(params, updates).round(4)
  Array([0.9, 1.1], dtype=float32)
"""

from adaptive_tx.compat import keras, torch

__all__ = ("keras", "torch")
