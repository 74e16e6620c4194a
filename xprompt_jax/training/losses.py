"""Loss terms: T5X-style cross entropy with z-loss and its normalisations, sequence scores, MPT distillation.

All functions are pure `jnp`, jit-friendly, and compute in float32 whatever the logits' dtype (bf16 included).

Cross entropy follows T5X `losses.compute_weighted_cross_entropy` / `cross_entropy_with_logits`: with
`lse = logsumexp(logits)`, per token `loss = -sum_v q_v (logits_v - lse) - H(q) + z_loss * lse**2` where `q` is
the (label-smoothed) one-hot target and `H(q)` the entropy of `q` (0 without smoothing), times the token weight.
T5X wraps it in a custom VJP whose logits gradient is `(1 + 2 z_loss lse) softmax - q`; plain autodiff of the
expression above gives `sum(q) softmax - q + 2 z_loss lse softmax`, the same since `sum(q) = 1`, so no custom
gradient is needed (tests check it against finite differences). T5X's VJP also drops the cotangent of its second
output (the z-loss alone), so differentiating that output there gives 0; here it gives the true gradient.

Normalisation (`normalize_loss`, T5X `loss_normalizing_factor`): None / "sum" (T5X's default, and the prompt-tuning
configs' `LOSS_NORMALIZING_FACTOR = None`), "num_real_target_tokens" (divide by the sum of weights),
"num_total_target_tokens" (divide by batch * length), "average_per_sequence" (each sequence's weighted mean,
averaged over the sequences that have any weight; unpacked batches only), or a positive constant.

MPT distillation (Wang et al. 2023, Eq. 3-5): `L = L_task + lambda (L_logits + L_hidden)` with
`L_logits = KL(p_teacher || p_student)` on temperature-softened distributions `p = softmax(z / T)` and
`L_hidden` a mean squared error between teacher and student hidden states. The paper's Eq. 3 has no `T**2`
factor, so `kl_divergence_loss` does not multiply by it by default; `scale_by_temperature_squared=True` gives the
Hinton et al. (2015) convention that keeps gradient magnitudes comparable across temperatures (with it, changing
T needs no retuning of lambda). Teacher inputs are wrapped in `stop_gradient`.
"""
import jax
import jax.numpy as jnp
import numpy as np

NORMALIZATION_MODES = ("sum", "num_real_target_tokens", "num_total_target_tokens", "average_per_sequence")


def _weights_like(targets, weights, what: str):
  if weights is None:
    return jnp.ones(targets.shape, jnp.float32)
  if tuple(weights.shape) != tuple(targets.shape):
    raise ValueError(f"{what}: weights shape {tuple(weights.shape)} != targets shape {tuple(targets.shape)}")
  return jnp.asarray(weights, jnp.float32)


def _check_logits_targets(logits, targets, what: str):
  if logits.ndim != targets.ndim + 1 or tuple(logits.shape[:-1]) != tuple(targets.shape):
    raise ValueError(f"{what}: logits shape {tuple(logits.shape)} must be targets shape {tuple(targets.shape)} "
                     "plus a vocab axis")


def _safe_div(num, den):
  return num / jnp.where(den > 0, den, 1.0)


def normalize_loss(per_token_loss, weights=None, mode: str | float | int | None = "num_real_target_tokens"):
  """Scalar loss from an already-weighted [batch, length] per-token loss, normalised as T5X's `mode`.

  `weights` ([batch, length], default all ones) only sets the divisor (and the per-sequence token counts);
  multiply the losses by them beforehand (cross_entropy_with_z_loss does). An all-zero weight batch gives 0.
  """
  per_token_loss = jnp.asarray(per_token_loss, jnp.float32)
  w = _weights_like(per_token_loss, weights, "normalize_loss")
  if mode is None:
    mode = "sum"
  if isinstance(mode, (int, float, np.number)) and not isinstance(mode, bool):
    if not mode > 0:
      raise ValueError(f"normalize_loss: a constant loss normalising factor must be > 0, got {mode}")
    return jnp.sum(per_token_loss) / mode
  if not isinstance(mode, str) or mode.lower() not in NORMALIZATION_MODES:
    raise ValueError(f"normalize_loss: unknown mode {mode!r}; expected None, a positive number or one of "
                     f"{NORMALIZATION_MODES}")
  mode = mode.lower()
  if mode == "sum":
    return jnp.sum(per_token_loss)
  if mode == "num_real_target_tokens":
    return _safe_div(jnp.sum(per_token_loss), jnp.sum(w))
  if mode == "num_total_target_tokens":
    return jnp.sum(per_token_loss) / per_token_loss.size
  if per_token_loss.ndim != 2:
    raise ValueError(f"normalize_loss: 'average_per_sequence' needs [batch, length] losses, got shape "
                     f"{tuple(per_token_loss.shape)}")
  seq_weight = jnp.sum(w, axis=-1)
  seq_loss = _safe_div(jnp.sum(per_token_loss, axis=-1), seq_weight)
  return _safe_div(jnp.sum(seq_loss), jnp.sum(seq_weight > 0).astype(jnp.float32))


def cross_entropy_with_z_loss(logits, targets, weights=None, z_loss: float = 1e-4, label_smoothing: float = 0.0,
                              loss_normalizing_factor: str | float | None = None):
  """T5X token cross entropy plus z-loss, in float32.

  Args:
    logits: [batch, length, vocab] (any float dtype).
    targets: [batch, length] int token ids.
    weights: [batch, length] loss weights (0 on padding), default all ones.
    z_loss: coefficient of `logsumexp(logits)**2`.
    label_smoothing: T5X label smoothing (the smoothed target's entropy is subtracted, so a perfect fit is 0).
    loss_normalizing_factor: how the two scalars are normalised (see `normalize_loss`); None sums, as T5X.

  Returns:
    (total_loss, z_loss_term, per_token_loss): the normalised scalar loss including the z-loss, the normalised
    scalar z-loss part alone (for logging), and the weighted, unnormalised [batch, length] loss incl. z-loss.
  """
  _check_logits_targets(logits, targets, "cross_entropy_with_z_loss")
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"cross_entropy_with_z_loss: label_smoothing must be in [0, 1), got {label_smoothing}")
  w = _weights_like(targets, weights, "cross_entropy_with_z_loss")
  logits = jnp.asarray(logits, jnp.float32)
  vocab = logits.shape[-1]
  lse = jax.nn.logsumexp(logits, axis=-1)
  log_probs = logits - lse[..., None]
  picked = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  if label_smoothing > 0.0:
    on, off = 1.0 - label_smoothing, label_smoothing / (vocab - 1)
    nll = -(on - off) * picked - off * jnp.sum(log_probs, axis=-1)
    nll = nll + (on * np.log(on) + (vocab - 1) * off * np.log(off))  # Minus the target entropy.
  else:
    nll = -picked
  z_term = z_loss * jnp.square(lse) * w
  per_token = nll * w + z_term
  return (normalize_loss(per_token, w, loss_normalizing_factor),
          normalize_loss(z_term, w, loss_normalizing_factor), per_token)


def sequence_log_likelihood(logits, targets, weights=None):
  """[batch] sum over target tokens of `weight * log p(target)`, float32 (the T5X `score_batch` convention)."""
  _check_logits_targets(logits, targets, "sequence_log_likelihood")
  w = _weights_like(targets, weights, "sequence_log_likelihood")
  log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return jnp.sum(picked * w, axis=tuple(range(1, targets.ndim)))


def kl_divergence_loss(teacher_logits, student_logits, weights=None, temperature: float = 1.0,
                       scale_by_temperature_squared: bool = False):
  """KL(softmax(teacher / T) || softmax(student / T)) per token, weighted mean over tokens (MPT Eq. 3).

  Logits are [..., vocab] with `weights` of shape [...] (default all ones); the teacher is not differentiated.
  """
  if tuple(teacher_logits.shape) != tuple(student_logits.shape):
    raise ValueError(f"kl_divergence_loss: teacher logits shape {tuple(teacher_logits.shape)} != student logits "
                     f"shape {tuple(student_logits.shape)}")
  if not temperature > 0:
    raise ValueError(f"kl_divergence_loss: temperature must be > 0, got {temperature}")
  t = jax.lax.stop_gradient(jnp.asarray(teacher_logits, jnp.float32)) / temperature
  s = jnp.asarray(student_logits, jnp.float32) / temperature
  log_p = jax.nn.log_softmax(t, axis=-1)
  log_q = jax.nn.log_softmax(s, axis=-1)
  kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
  w = _weights_like(kl, weights, "kl_divergence_loss")
  loss = _safe_div(jnp.sum(kl * w), jnp.sum(w))
  return loss * temperature ** 2 if scale_by_temperature_squared else loss


def hidden_mse_loss(teacher_hidden, student_hidden, mask=None):
  """Mean squared error over the masked positions and the feature axis (MPT Eq. 4, averaged).

  Hidden states are [..., dim] with `mask` of shape [...] (default all ones); the teacher is not differentiated.
  """
  if tuple(teacher_hidden.shape) != tuple(student_hidden.shape):
    raise ValueError(f"hidden_mse_loss: teacher hidden shape {tuple(teacher_hidden.shape)} != student hidden "
                     f"shape {tuple(student_hidden.shape)}")
  diff = jnp.asarray(student_hidden, jnp.float32) - jax.lax.stop_gradient(jnp.asarray(teacher_hidden, jnp.float32))
  sq = jnp.mean(jnp.square(diff), axis=-1)
  w = _weights_like(sq, mask, "hidden_mse_loss (mask)")
  return _safe_div(jnp.sum(sq * w), jnp.sum(w))


def prompt_distance_loss(student_prompt, teacher_prompt):
  """Mean squared distance between the student and (fixed) teacher prompt matrices (the MPT ablation)."""
  if tuple(student_prompt.shape) != tuple(teacher_prompt.shape):
    raise ValueError(f"prompt_distance_loss: student prompt shape {tuple(student_prompt.shape)} != teacher prompt "
                     f"shape {tuple(teacher_prompt.shape)}")
  diff = jnp.asarray(student_prompt, jnp.float32) - jax.lax.stop_gradient(jnp.asarray(teacher_prompt, jnp.float32))
  return jnp.mean(jnp.square(diff))
