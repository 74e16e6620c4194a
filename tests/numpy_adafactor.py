"""Test-only float64 numpy Adafactor (Shazeer & Stern 2018, with T5X's conventions), independent of optax.

Golden tests compare `xprompt_jax.training.optim.make_optimizer(...)` against this. API:

  hp = AdafactorHParams()                 # the Lester prompt-tuning recipe; or hparams_from_config(cfg)
  state = init(params)
  new_params, state = update(grads, state, params, hp)

`params`/`grads` are any pytrees of arrays (jax.tree_util only walks the structure; all math is numpy float64).
Per leaf, with s the 0-based step:
  beta2 = 1 - (s - step_offset + 1) ** -decay_rate
  G = g^2 + eps1; factored (two largest dims, the smaller >= min_dim_size_to_factor; c = largest, r = other):
    R = beta2 R + (1 - beta2) mean_c(G);  C = beta2 C + (1 - beta2) mean_r(G);  V = R C / mean_r(R)
  unfactored: V = beta2 V + (1 - beta2) G
  U = g / sqrt(V);  U /= max(1, rms(U) / clipping_threshold)
  step = lr(s) * U  (* max(rms(p), eps2) with multiply_by_parameter_scale);  with beta1: m = beta1 m + (1-beta1) step
  p <- (1 - weight_decay_rate) p - step
"""
import dataclasses
from collections.abc import Callable

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class AdafactorHParams:
  learning_rate: float | Callable[[int], float] = 0.3
  decay_rate: float = 0.8
  step_offset: int = 0
  factored: bool = True
  min_dim_size_to_factor: int = 128
  multiply_by_parameter_scale: bool = False
  clipping_threshold: float | None = 1.0
  beta1: float | None = None
  weight_decay_rate: float | None = 1e-5
  epsilon1: float = 1e-30
  epsilon2: float = 1e-3
  global_norm_clip: float | None = None


def hparams_from_config(cfg, learning_rate: float | Callable[[int], float] | None = None) -> AdafactorHParams:
  """The hyper-parameters of an OptimizerConfig-like object (read by attribute name; schedule not reproduced)."""
  names = [f.name for f in dataclasses.fields(AdafactorHParams)]
  hp = AdafactorHParams(**{n: getattr(cfg, n) for n in names if hasattr(cfg, n)})
  return dataclasses.replace(hp, learning_rate=hp.learning_rate if learning_rate is None else learning_rate)


def decay_rate_at(step: int, decay_rate: float = 0.8, step_offset: int = 0) -> float:
  """beta2 used by the update at 0-based `step`."""
  return 1.0 - float(step - step_offset + 1) ** -decay_rate


def factored_dims(shape, hp: AdafactorHParams) -> tuple[int, int] | None:
  """(row dim, column dim) = (second largest, largest), or None when the leaf keeps a full second moment."""
  if not hp.factored or len(shape) < 2:
    return None
  order = np.argsort(np.asarray(shape), kind="stable")
  if shape[order[-2]] < hp.min_dim_size_to_factor:
    return None
  return int(order[-2]), int(order[-1])


def _leaf_state(p, hp: AdafactorHParams) -> dict:
  p = np.asarray(p, np.float64)
  dims = factored_dims(p.shape, hp)
  state = {"m": np.zeros_like(p)}
  if dims is None:
    state["v"] = np.zeros_like(p)
  else:
    r, c = dims
    state["v_row"] = np.zeros(np.delete(p.shape, c))
    state["v_col"] = np.zeros(np.delete(p.shape, r))
  return state


def init(params, hp: AdafactorHParams | None = None) -> dict:
  hp = AdafactorHParams() if hp is None else hp
  leaves, treedef = jax.tree_util.tree_flatten(params)
  return {"step": 0, "treedef": treedef, "hp": hp, "leaves": [_leaf_state(p, hp) for p in leaves]}


def _leaf_update(g, p, st: dict, hp: AdafactorHParams, beta2: float, lr: float):
  g = np.asarray(g, np.float64)
  p = np.asarray(p, np.float64)
  sq = g * g + hp.epsilon1
  dims = factored_dims(p.shape, hp)
  st = dict(st)
  if dims is None:
    st["v"] = beta2 * st["v"] + (1.0 - beta2) * sq
    v_hat = st["v"]
  else:
    r, c = dims
    st["v_row"] = beta2 * st["v_row"] + (1.0 - beta2) * sq.mean(axis=c)
    st["v_col"] = beta2 * st["v_col"] + (1.0 - beta2) * sq.mean(axis=r)
    r_in_row = r if r < c else r - 1  # Where dim r sits in v_row (dim c removed).
    row = st["v_row"] / st["v_row"].mean(axis=r_in_row, keepdims=True)
    v_hat = np.expand_dims(row, c) * np.expand_dims(st["v_col"], r)
  u = g / np.sqrt(v_hat)
  if hp.clipping_threshold is not None:
    u = u / max(1.0, np.sqrt(np.mean(u * u)) / hp.clipping_threshold)
  scale = lr
  if hp.multiply_by_parameter_scale:
    scale = scale * max(np.sqrt(np.mean(p * p)), hp.epsilon2)
  step = scale * u
  if hp.beta1 is not None:
    st["m"] = hp.beta1 * st["m"] + (1.0 - hp.beta1) * step
    step = st["m"]
  new_p = p - step
  if hp.weight_decay_rate:
    new_p = new_p - hp.weight_decay_rate * p
  return new_p, st


def update(grads, state: dict, params, step_cfg: AdafactorHParams | None = None):
  """One Adafactor step: (new_params as float64 numpy leaves in the params' structure, new_state)."""
  hp = state["hp"] if step_cfg is None else step_cfg
  g_leaves, g_def = jax.tree_util.tree_flatten(grads)
  p_leaves, p_def = jax.tree_util.tree_flatten(params)
  if g_def != state["treedef"] or p_def != state["treedef"]:
    raise ValueError(f"numpy_adafactor.update: tree mismatch: state {state['treedef']}, grads {g_def}, "
                     f"params {p_def}")
  if hp.global_norm_clip is not None:
    norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in g_leaves))
    g_leaves = [np.asarray(g, np.float64) * min(1.0, hp.global_norm_clip / norm) for g in g_leaves]
  s = state["step"]
  beta2 = decay_rate_at(s, hp.decay_rate, hp.step_offset)
  lr = float(hp.learning_rate(s)) if callable(hp.learning_rate) else float(hp.learning_rate)
  out = [_leaf_update(g, p, st, hp, beta2, lr) for g, p, st in zip(g_leaves, p_leaves, state["leaves"])]
  new_params = jax.tree_util.tree_unflatten(p_def, [o[0] for o in out])
  return new_params, {**state, "step": s + 1, "leaves": [o[1] for o in out]}
