"""MPT prompt distillation (Wang et al. 2023, Eq. 3-5): the source-training loss of the decomposed student prompts.

    L = L_PLM + lambda * (L_logits + L_hidden)

`L_PLM` is the ordinary token cross entropy (with z-loss) of the student `P_k = P* ∘ (u_k v_kᵀ)`;
`L_logits = KL(p_teacher || p_student)` on temperature-softened output distributions over the target tokens;
`L_hidden` is the mean squared error between teacher and student hidden states of the encoder (every valid
position, prompt included) and of the decoder (target tokens), summed. The teacher of an example is its own task's
single-task prompt (`aux["teacher_prompts"]`, [T, L, D], never trained: the state's `aux` is checkpointed with the
run but not given to the optimizer) on the same frozen model; the teacher forward runs inside the same jitted step
under `stop_gradient`, and one batch may hold examples of several tasks (`batch["task_id"]` routes each example to
its teacher and to its own u_k, v_k).

Ablations (`DistillConfig.objective`): "logits" drops the hidden-state term; "distance" replaces both terms by the
MSE between the student's and the teacher's prompt matrices; lambda = 0 is plain multitask MPT (no teacher
forward at all).
"""
import dataclasses
from typing import Callable

import gin
import jax
import jax.numpy as jnp
import numpy as np

from xprompt_jax.methods.mpt import MPT
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection
from xprompt_jax.models.t5 import T5
from xprompt_jax.training import losses
from xprompt_jax.training import step as step_lib

TEACHERS_KEY = "teacher_prompts"
OBJECTIVES = ("logits_hidden", "logits", "distance")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DistillConfig:
  """`weight` is the paper's lambda; `temperature` softens both distributions (p = softmax(z / T))."""
  weight: float = 1.0
  temperature: float = 1.0
  objective: str = "logits_hidden"
  scale_by_temperature_squared: bool = False

  def __post_init__(self):
    if not (isinstance(self.weight, (int, float)) and np.isfinite(self.weight)) or self.weight < 0:
      raise ValueError(f"DistillConfig.weight (lambda) must be a finite number >= 0, got {self.weight!r}")
    if not self.temperature > 0:
      raise ValueError(f"DistillConfig.temperature must be > 0, got {self.temperature!r}")
    if self.objective not in OBJECTIVES:
      raise ValueError(f"DistillConfig.objective={self.objective!r}; known: {', '.join(OBJECTIVES)}")


def check_teachers(teacher_prompts, method: MPT, config: T5Config, task_names=None) -> None:
  """Raises unless the teachers are [method.num_tasks, method.length, config.emb_dim] (names both shapes)."""
  expected = (method.num_tasks, method.length, config.emb_dim)
  shape = tuple(np.shape(teacher_prompts))
  if shape != expected:
    which = f" for tasks {list(task_names)}" if task_names is not None else ""
    raise ValueError(f"teacher prompts{which} have shape {shape}; the MPT student needs [num_tasks, prompt length, "
                     f"emb_dim] = {expected} (a teacher prompt of another length or model cannot be distilled)")


def teacher_injection(teacher_prompts, task_id) -> Injection:
  """Each example's own teacher prompt `[B, L, D]`, not differentiated."""
  return Injection(prompt=jax.lax.stop_gradient(jnp.take(teacher_prompts, task_id, axis=0)))


def distillation_terms(teacher_out, student_out, batch: dict, cfg: DistillConfig) -> dict:
  """{"kl_loss", "hidden_loss"} from `(logits, hidden)` pairs of `T5(..., return_hidden=True)` (teacher first)."""
  (t_logits, t_hidden), (s_logits, s_hidden) = teacher_out, student_out
  targets = batch["decoder_target_tokens"]
  weights = batch.get("decoder_loss_weights", (targets > 0).astype(jnp.float32))
  kl = losses.kl_divergence_loss(t_logits, s_logits, weights, cfg.temperature, cfg.scale_by_temperature_squared)
  terms = {"kl_loss": kl, "hidden_loss": jnp.zeros((), jnp.float32)}
  if cfg.objective == "logits_hidden":
    enc = losses.hidden_mse_loss(t_hidden["encoder"], s_hidden["encoder"], s_hidden["encoder_valid"])
    dec = losses.hidden_mse_loss(t_hidden["decoder"], s_hidden["decoder"], weights)
    terms["hidden_loss"] = enc + dec
  return terms


def make_distill_loss(model: T5, method: MPT, config: T5Config, loss_cfg: step_lib.LossConfig = step_lib.LossConfig(),
                      cfg: DistillConfig = DistillConfig()) -> Callable:
  """`loss_fn(trainable, frozen, batch, aux, rng) -> (loss, metrics)` for `train(loss_fn=...)`.

  `aux[TEACHERS_KEY]` holds the teacher prompts [T, L, D]; `batch["task_id"]` the task of each example.
  """
  if not isinstance(method, MPT):
    raise ValueError(f"MPT distillation needs an MPT student method, got {type(method).__name__}")

  def loss_fn(trainable, frozen, batch, aux, rng):
    if cfg.weight > 0 and TEACHERS_KEY not in aux:
      raise ValueError(f"MPT distillation needs the teacher prompts in the state's aux[{TEACHERS_KEY!r}]; aux has "
                       f"{sorted(aux)}")
    wants_model_terms = cfg.weight > 0 and cfg.objective != "distance"
    student_out = step_lib.forward(model, method, config, frozen, trainable, batch, aux, rng=rng,
                                   return_hidden=wants_model_terms)
    student_logits = student_out[0] if wants_model_terms else student_out
    task_loss, metrics = step_lib.token_loss(student_logits, batch, loss_cfg)
    zero = jnp.zeros((), jnp.float32)
    terms = {"kl_loss": zero, "hidden_loss": zero, "distance_loss": zero}
    if cfg.weight > 0:
      task_id = batch["task_id"]
      if cfg.objective == "distance":
        student_prompts = method.inject(trainable, step_lib.method_batch(batch, aux), config).prompt
        teachers = jnp.take(aux[TEACHERS_KEY], task_id, axis=0)
        terms["distance_loss"] = losses.prompt_distance_loss(student_prompts, teachers)
      else:
        teacher_out = model.apply({"params": frozen}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                                  injection=teacher_injection(aux[TEACHERS_KEY], task_id),
                                  encoder_segment_ids=batch.get("encoder_segment_ids"),
                                  decoder_segment_ids=batch.get("decoder_segment_ids"), return_hidden=True)
        teacher_out = jax.lax.stop_gradient(teacher_out)
        terms.update(distillation_terms(teacher_out, student_out, batch, cfg))
    distill = terms["kl_loss"] + terms["hidden_loss"] + terms["distance_loss"]
    total = task_loss + cfg.weight * distill
    metrics = {**metrics, **terms, "task_loss": task_loss, "distill_loss": distill, "loss": total}
    return total, metrics

  return loss_fn
