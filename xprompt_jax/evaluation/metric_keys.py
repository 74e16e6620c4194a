"""The metric keys an evaluation will report, predicted from the tasks' declared metric keys without running it.

    names = loop.default_eval_tasks(train_cfg, data_cfg, eval_cfg)   # ("super_glue_multirc_v102",)
    metric_keys.evaluation_keys(names, EvalConfig(mode="rank"))
    # ("super_glue_multirc_v102/f1", "super_glue_multirc_v102/exact_match")
    metric_keys.check_key("TrainConfig.best_metric", train_cfg.best_metric, names, eval_cfg)   # one-line ValueError

The prediction follows `evaluator.py`: a task's `TaskEvaluator.evaluate` reports its metric fns' keys (those of
`predict_metric_fns` when it ranks label words or decodes, plus `score_metric_fns` when it ranks `*_rank` rows),
unprefixed in mode "rank", "decode" and "auto" (rank where the task can be ranked, else decode), under `rank/` and
`decode/` with `EvalConfig.mode="both"` (also when one of the two is impossible for it); a mixture's
`MixtureEvaluator.evaluate` reports `<task>/<key>` for each sub-task that has the split (each falling back to the
other mode when it needs to) and `average/score` plus `average/<key>` for keys every sub-task reports; the loop
prefixes each evaluator's keys with the evaluated name, `<name>/<key>`, which is what `TrainConfig.best_metric` is
matched against. Metric fns declare their keys with `metrics.reports`; a task with an undeclared metric fn (or an
evaluation mode this module does not know) has unknown keys (None), and nothing is checked for it.
`tests/test_metric_keys.py` pins the prediction to the keys real evaluations return.
"""
from typing import Any, Optional, Sequence

from absl import logging
import seqio

from xprompt_jax.evaluation import eval_data
from xprompt_jax.evaluation import labels as labels_lib
from xprompt_jax.evaluation import metrics
from xprompt_jax.tasks import registry_utils as ru

Keys = Optional[tuple[str, ...]]  # None: unknown (an undeclared metric fn or an unknown mode).
KNOWN_MODES = ("rank", "decode", "both", "auto")


def fn_keys(metric_fns: Sequence[Any]) -> Keys:
  """The keys the metric fns report together (in order, each once); None if any fn declares none."""
  out: dict[str, None] = {}
  for fn in metric_fns:
    keys = metrics.reported_keys(fn)
    if keys is None:
      return None
    out.update(dict.fromkeys(keys))
  return tuple(out)


def why_not(task: seqio.Task, mode: str) -> str:
  """Why `task` cannot be evaluated in `mode` ("rank" or "decode")."""
  if mode == "rank":
    return (f"task {task.name!r} cannot be rank-classified: its postprocess_fn "
            f"{labels_lib.task_postprocessor(task)!r} maps no fixed label words and it has no score_metric_fns")
  return (f"task {task.name!r} cannot be evaluated by decoding: it has no predict metric_fns (only score metrics "
          f"{task.score_metric_fns})")


def task_modes(task: seqio.Task, mode: str, fallback: bool = False) -> tuple[str, ...]:
  """The modes a `TaskEvaluator` evaluates `task` in: "auto" is rank where possible, else decode; "both" keeps
  the possible ones; an impossible "rank"/"decode" raises a one-line error, or with `fallback` (a mixture's
  sub-tasks) turns into the other mode. The evaluator and the key prediction both decide here."""
  can_rank = bool(labels_lib.label_candidates(task) and task.predict_metric_fns) or bool(task.score_metric_fns)
  can_decode = bool(task.predict_metric_fns)
  if not can_rank and not can_decode:
    raise ValueError(f"task {task.name!r} has no metric_fns to evaluate")
  if mode == "auto":
    return ("rank",) if can_rank else ("decode",)
  wanted = ("rank", "decode") if mode == "both" else (mode,)
  possible = {"rank": can_rank, "decode": can_decode}
  kept = tuple(m for m in wanted if possible[m])
  if kept:
    return kept
  other = "decode" if mode == "rank" else "rank"
  if not fallback:
    raise ValueError(f"{why_not(task, mode)}; use EvalConfig.mode={other!r}")
  return (other,)


def task_keys(task: seqio.Task, eval_cfg: Any, fallback: bool = False) -> Keys:
  """The keys `TaskEvaluator(task, ..., eval_cfg).evaluate(...)` returns."""
  if eval_cfg.mode not in KNOWN_MODES:
    return None
  per_mode = {}
  for mode in task_modes(task, eval_cfg.mode, fallback):
    if mode == "rank":
      parts = []
      if labels_lib.label_candidates(task) and task.predict_metric_fns:
        parts.append(fn_keys(task.predict_metric_fns))
      if task.score_metric_fns:
        parts.append(fn_keys(task.score_metric_fns))
      if any(p is None for p in parts):
        return None
      per_mode[mode] = tuple(dict.fromkeys(k for p in parts for k in p))
    else:
      per_mode[mode] = fn_keys(task.predict_metric_fns)
      if per_mode[mode] is None:
        return None
  if eval_cfg.mode != "both":
    return next(iter(per_mode.values()))
  return tuple(f"{mode}/{k}" for mode, keys in per_mode.items() for k in keys)


def evaluator_keys(name: str, eval_cfg: Any) -> Keys:
  """The keys `make_evaluator(name, ..., eval_cfg).evaluate(...)` returns (an unknown name raises, naming the
  closest registered names)."""
  provider = ru.get_task_or_mixture(name)
  if not isinstance(provider, seqio.Mixture):
    eval_data.check_split(provider, eval_cfg.split)
    return task_keys(provider, eval_cfg)
  per_task = {}
  for task in provider.tasks:
    if eval_cfg.split in (task.splits or ()):
      per_task[task.name] = task_keys(task, eval_cfg, fallback=True)
  if not per_task:
    raise ValueError(f"no task of mixture {provider.name!r} has the split {eval_cfg.split!r}")
  if any(keys is None for keys in per_task.values()):
    return None
  out = [f"{task}/{k}" for task, keys in per_task.items() for k in keys]
  reporting = [set(keys) for keys in per_task.values() if keys]
  if reporting:
    out.append("average/score")
    out += [f"average/{k}" for k in sorted(reporting[0].intersection(*reporting[1:]))]
  return tuple(out)


def evaluation_keys(names: Sequence[str], eval_cfg: Any) -> Keys:
  """The keys the training loop reports for an evaluation of `names`: `<name>/<key>` for each."""
  out = []
  for name in names:
    keys = evaluator_keys(name, eval_cfg)
    if keys is None:
      return None
    out += [f"{name}/{k}" for k in keys]
  return tuple(out)


def check_key(binding: str, value: Optional[str], names: Sequence[str], eval_cfg: Any,
              prefix: Optional[str] = None) -> None:
  """Raises one-line ValueError when `value`, bound as `binding`, is not a key the evaluation of `names` reports.

  `prefix` (a name of `names`) checks an unprefixed key of that evaluator, as `XPromptPipelineConfig.select_metric`
  is; without it `value` is a full `<name>/<key>` as `TrainConfig.best_metric` is. None is always fine; so is any
  value when the keys are unknown (logged)."""
  if value is None:
    return
  mode = f"(EvalConfig.mode={eval_cfg.mode!r})"
  if prefix is None:
    keys, where = evaluation_keys(names, eval_cfg), f"the evaluation on {', '.join(names)} {mode} reports"
  else:
    keys, where = evaluator_keys(prefix, eval_cfg), f"{prefix} {mode} reports"
  if keys is None:
    logging.warning("%s=%r not checked: the metric keys of %s are unknown (a metric fn without a "
                    "metrics.reports declaration, or EvalConfig.mode=%r)", binding, value, ", ".join(names),
                    eval_cfg.mode)
    return
  if value not in keys:
    raise ValueError(f"{binding}={value!r}: {where} {', '.join(keys)}; bind one of them")
