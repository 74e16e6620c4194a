"""Every method and control on one backbone, several seeds, official validation sets: records + a results page.

    python bench/compare_methods.py --gin_file=pretrain/compare_local.gin --results_dir=/tmp/compare
    python bench/compare_methods.py --quick --results_dir=/tmp/compare_quick   # tiny random T5, minutes

Runs, per seed: prompt tuning with the three initialisations of Lester et al. (random uniform, sampled vocabulary,
class labels) and prefix tuning on every task (`training.loop.train`, evaluated every `eval_period` steps on the
task's official validation file; the record is the best evaluation, the papers' early-stopping protocol, and
the last one); MPT (`pipelines.mpt.run_pipeline`: teachers on the source tasks, distilled multitask source prompt,
adaptation to each target task); XPrompt with its controls (`pipelines.xprompt.run_xprompt`: its own
prompt-tuning stage, pruning, rewinding, Reversed / Random / Length / token-only / piece-only). Each finished run
leaves `result.json` in its folder, so rerunning resumes; every record is appended to
`<results_dir>/results.jsonl`, from which `pipelines.compare_report` writes the page
(`docs/studies/local_backbone/results_local.md` by default) and its plot. With `CompareConfig.num_shots` every
single-task run trains on the same k rows of its task (k-shot), and the page's training-loss table says whether
each method fitted them.
"""
import collections
import dataclasses
import json
import os
import time
import traceback
from typing import Any, Callable, Mapping, Optional

import gin
import numpy as np

from xprompt_jax import plotting
from xprompt_jax.methods import get_method
from xprompt_jax.pipelines import compare_report
from xprompt_jax.training import data as data_lib
from xprompt_jax.training import loop
from xprompt_jax.training import run_configs
from xprompt_jax.training import stages
from xprompt_jax.tasks.registry_utils import class_labels  # noqa: F401  (compare.class_labels, as before)

PROMPT_METHODS = {"prompt_random": "random_uniform", "prompt_sampled_vocab": "sampled_vocab",
                  "prompt_class_labels": "class_labels"}
METHODS = (*PROMPT_METHODS, "prefix", "mpt", "xprompt")
# Controls a comparison can add to its methods (not run by default): "model_tuning" trains every parameter of the
# backbone on the task (the papers' model-tuning baseline) and evaluates it like the methods.
CONTROLS = ("model_tuning",)
TASKS = ("glue_sst2_v002", "super_glue_rte_v102", "super_glue_cb_v102", "super_glue_boolq_v102_32shot",
         "super_glue_wic_v102", "super_glue_copa_v102")
MPT_SOURCES = ("glue_mnli_v002", "glue_qnli_v002", "glue_qqp_v002", "glue_sst2_v002")
MPT_TARGETS = ("super_glue_rte_v102", "super_glue_cb_v102", "super_glue_boolq_v102_32shot", "super_glue_wic_v102",
               "super_glue_copa_v102")
RESULTS_NAME = "results.jsonl"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CompareConfig:
  """What to compare. The model, lengths, batch size, optimizer and evaluation come from the usual gin bindings
  (T5Config, DataConfig, OptimizerConfig, EvalConfig, TrainConfig); `backbone` overrides
  TrainConfig.initial_checkpoint (None: random weights, a plumbing check only)."""
  backbone: Optional[str] = None
  tasks: tuple[str, ...] = TASKS
  seeds: tuple[int, ...] = (0, 1, 2)
  methods: tuple[str, ...] = METHODS
  num_train_steps: int = 1000
  eval_period: int = 250
  prompt_length: int = 20
  prefix_length: int = 10
  prefix_hidden_dim: int = 256
  mpt_sources: tuple[str, ...] = MPT_SOURCES
  mpt_targets: tuple[str, ...] = MPT_TARGETS
  xprompt_tasks: Optional[tuple[str, ...]] = None  # None: `tasks`.
  xprompt_ratios: tuple[float, ...] = (0.3, 0.5, 0.7)
  xprompt_pieces: int = 4
  xprompt_importance_examples: Optional[int] = None  # None: the whole training set scores the importance.
  # Per-task encoder input lengths of the single-task runs (prompt, prefix, XPrompt), e.g. 64 for SST-2, whose
  # longest input is 84 tokens; other tasks, and MPT (whose tasks share batches), use DataConfig.inputs_length.
  inputs_lengths: Mapping[str, int] = dataclasses.field(default_factory=dict)
  # Model tuning (a control: add "model_tuning" to `methods`): T5's fine-tuning recipe, Adafactor with
  # parameter-scaled updates at a constant learning rate, with dropout; the OptimizerConfig binds the methods only.
  model_tuning_learning_rate: float = 1e-3
  model_tuning_dropout: float = 0.1
  # k-shot: every single-task run (prompt, prefix, XPrompt, model tuning) trains on `num_shots` rows of its task's
  # training split drawn with `shots_seed` (`pipelines.examples.draw`: the same rows for every method and seed);
  # None: the whole split. Few-shot training, and the check of whether a method can fit a handful of examples.
  num_shots: Optional[int] = None
  shots_seed: int = 0

  def __post_init__(self):
    unknown = sorted(set(self.methods) - set(METHODS) - set(CONTROLS))
    if unknown:
      raise ValueError(f"CompareConfig.methods has unknown methods {unknown}; known: "
                       f"{', '.join(METHODS + CONTROLS)}")
    if not self.model_tuning_learning_rate > 0 or not 0 <= self.model_tuning_dropout < 1:
      raise ValueError(f"CompareConfig.model_tuning_learning_rate={self.model_tuning_learning_rate!r} must be > 0 "
                       f"and model_tuning_dropout={self.model_tuning_dropout!r} in [0, 1)")
    if self.num_shots is not None:
      if not isinstance(self.num_shots, int) or isinstance(self.num_shots, bool) or self.num_shots <= 0:
        raise ValueError(f"CompareConfig.num_shots={self.num_shots!r} must be a positive int or None")
      if "mpt" in self.methods:
        raise ValueError("CompareConfig.num_shots does not apply to MPT, whose tasks share multitask batches; "
                         "its few-shot adaptation is MPTConfig.few_shot (xprompt-jax mpt). Remove 'mpt' from "
                         "CompareConfig.methods for a k-shot comparison")
    if not self.seeds or not self.tasks:
      raise ValueError("CompareConfig.seeds and CompareConfig.tasks must not be empty")
    for name in ("num_train_steps", "eval_period", "prompt_length", "prefix_length", "xprompt_pieces"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
        raise ValueError(f"CompareConfig.{name} must be a positive int, got {getattr(self, name)!r}")
    for task, length in dict(self.inputs_lengths).items():
      if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
        raise ValueError(f"CompareConfig.inputs_lengths[{task!r}]={length!r} must be a positive int")


Settings = run_configs.RunConfigs


def settings_from_gin(cfg: CompareConfig) -> Settings:
  """The gin-bound configs every run starts from, with the comparison's backbone, steps and evaluation period."""
  settings = Settings.from_gin(cfg.tasks[0])
  train = dataclasses.replace(settings.train, initial_checkpoint=cfg.backbone or settings.train.initial_checkpoint,
                              num_train_steps=cfg.num_train_steps, eval_period=cfg.eval_period,
                              checkpoint_period=cfg.num_train_steps, keep_checkpoints=1, progress_bar=False)
  return dataclasses.replace(settings, train=train)


def constant_baselines(task: str, lengths: dict[str, int], max_examples: Optional[int] = None) -> dict[str, float]:
  """Validation accuracies (%) of two constant predictors, on the first `max_examples` validation rows (as
  `EvalConfig.max_examples` evaluates; None: all): "majority", always the training split's most frequent target
  (the papers' majority-class baseline), and "best_constant", the validation split's own most frequent target (an
  upper bound on any constant prediction: a run stuck on one label can reach it without using its input). Also
  "prior_loss": the training loss per target token (nats) of a model that ignores its input and predicts the
  training split's target frequencies, the level a run that has learnt nothing but those frequencies sits at."""
  provider = data_lib.get_task(task)

  def targets(split):
    ds = provider.get_dataset(lengths, split=split, shuffle=False)
    return [(ex["targets_pretokenized"], int(np.count_nonzero(ex["targets"]))) for ex in ds.as_numpy_iterator()]

  train = targets("train")
  counts = collections.Counter(t for t, _ in train)
  majority = counts.most_common(1)[0][0]
  nats = -sum(np.log(counts[t] / len(train)) for t, _ in train)
  val = [t for t, _ in targets("validation")[:max_examples]]
  best = collections.Counter(val).most_common(1)[0][1]
  return {"majority": 100.0 * float(np.mean([t == majority for t in val])), "best_constant": 100.0 * best / len(val),
          "prior_loss": float(nats / sum(n for _, n in train))}


def evaluations(model_dir: str, task: str, rows: Optional[list[dict]] = None) -> list[tuple[int, dict[str, float]]]:
  """`(step, metrics)` of every evaluation of `task` in `model_dir/metrics.jsonl` (or its already read `rows`), in
  order, task prefix removed."""
  evals = []
  for row in plotting.read_metrics(model_dir) if rows is None else rows:
    metrics = {k.split(f"{task}/", 1)[1]: v for k, v in row.items() if k.startswith(f"{task}/")}
    if row.get("kind") == "eval" and metrics:
      evals.append((int(row.get("step", 0)), metrics))
  if not evals:
    raise ValueError(f"{model_dir}/metrics.jsonl has no evaluation of {task}")
  return evals


def _best(evals: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
  return max((m for _, m in evals), key=lambda m: m.get(compare_report.SCORE_METRIC, float("-inf")))


def best_eval(model_dir: str, task: str) -> dict[str, float]:
  """The evaluation of `metrics.jsonl` with the best accuracy on `task` (ties: the earliest), task prefix removed."""
  return _best(evaluations(model_dir, task))


def last_train_loss(rows: list[dict]) -> Optional[float]:
  """The training cross entropy per target token of the last logged window among metrics.jsonl `rows` (None: no
  training row): the logged loss less its z-loss term (about 0.025 nats on these runs), so it compares with
  `prior_loss`."""
  train = [row for row in rows if row.get("kind") == "train" and "loss" in row]
  return float(train[-1]["loss"]) - float(train[-1].get("z_loss", 0.0)) if train else None


def run_record(run_dir: str, method: str, task: str, seed: int) -> dict:
  """The record of one trained run: its best evaluation ("metrics", the papers' early stopping on validation), its
  last ("final_metrics", at "final_step": no selection on validation at all) and the training cross entropy of its
  last logged window ("final_train_loss": whether the run fits its own training batches)."""
  rows = plotting.read_metrics(run_dir)
  evals = evaluations(run_dir, task, rows)
  final_step, final = evals[-1]
  record = {"method": method, "task": task, "seed": seed, "metrics": _best(evals), "final_metrics": final,
            "final_step": final_step}
  train_loss = last_train_loss(rows)
  return record if train_loss is None else {**record, "final_train_loss": train_loss}


def shots_stream(run_dir: str, data_cfg: data_lib.DataConfig, cfg: CompareConfig) -> Optional[Callable]:
  """`batches_fn` cycling over the run's k shots (`cfg.num_shots` rows drawn with `cfg.shots_seed`, listed in
  `run_dir/shots.json`); None when the comparison trains on the whole split."""
  if cfg.num_shots is None:
    return None
  from xprompt_jax.pipelines import examples as examples_lib
  shots, indices = examples_lib.draw(data_cfg, cfg.num_shots, cfg.shots_seed)
  examples_lib.save_shots(os.path.join(run_dir, "shots.json"), data_cfg, cfg.shots_seed, indices)
  print(f"compare: {cfg.num_shots}-shot: training on rows {indices.tolist()[:8]}"
        f"{' ...' if len(indices) > 8 else ''} of {data_cfg.mixture_or_task_name}[{data_cfg.split}] (shots.json)")
  return examples_lib.cycling_batches_fn(shots, data_cfg.seed)


def run_single(run_dir: str, settings: Settings, method_name: str, cfg: CompareConfig, task: str,
               seed: int) -> list[dict]:
  """One prompt- or prefix-tuning run -> [record]."""
  if method_name == "prefix":
    method = get_method("prefix", length=cfg.prefix_length, hidden_dim=cfg.prefix_hidden_dim)
  else:
    init = PROMPT_METHODS[method_name]
    kwargs = {"class_labels": class_labels(task)} if init == "class_labels" else {}
    method = get_method("prompt", length=cfg.prompt_length, prompt_init=init, **kwargs)
  s = settings.for_run(task, seed, cfg.inputs_lengths.get(task))
  stages.check_preempted(loop.train(run_dir, method=method, batches_fn=shots_stream(run_dir, s.data, cfg),
                                    **s.train_kwargs()), run_dir)
  return [run_record(run_dir, method_name, task, seed)]


def run_model_tuning(run_dir: str, settings: Settings, cfg: CompareConfig, task: str, seed: int) -> list[dict]:
  """Model tuning: every backbone parameter trained on `task` (`pretraining.train.pretrain` with the task's batches
  and T5's fine-tuning recipe), evaluated on the validation file like the methods -> [record]. The tuned model is
  exported to `run_dir/export/checkpoint_<steps>`."""
  from xprompt_jax.evaluation import evaluator as eval_lib
  from xprompt_jax.models.t5 import T5
  from xprompt_jax.pretraining import train as pretrain_lib
  s = settings.for_run(task, seed, cfg.inputs_lengths.get(task))
  steps = cfg.num_train_steps
  pretrain_cfg = pretrain_lib.PretrainConfig(
      num_train_steps=steps, learning_rate=cfg.model_tuning_learning_rate,
      warmup_steps=steps,  # The rsqrt schedule's constant part covers the run: a constant learning rate.
      initial_checkpoint=s.train.initial_checkpoint, log_period=s.train.log_period, eval_period=cfg.eval_period,
      checkpoint_period=steps, keep_checkpoints=1, seed=seed, progress_bar=False)
  config = dataclasses.replace(s.config, dropout_rate=cfg.model_tuning_dropout)
  evaluator = eval_lib.make_evaluator(task, T5(config), config, s.eval)
  pretrain_lib.pretrain(run_dir, config=config, data_cfg=s.data, cfg=pretrain_cfg, mesh_cfg=s.mesh,
                        evaluate=lambda params: {f"{task}/{k}": v for k, v in evaluator.evaluate(params).items()},
                        batches_fn=shots_stream(run_dir, s.data, cfg))
  return [run_record(run_dir, "model_tuning", task, seed)]


def run_mpt(run_dir: str, settings: Settings, cfg: CompareConfig, seed: int) -> list[dict]:
  """MPT (sources -> distilled shared prompt -> every target) -> one record per target task."""
  from xprompt_jax.pipelines import mpt
  s = settings.for_run(cfg.mpt_sources[0], seed)
  base = mpt.Base.extend(s)
  mpt_cfg = mpt.MPTConfig().replace(source_tasks=tuple(cfg.mpt_sources), source_rates=None,
                                    target_tasks=tuple(cfg.mpt_targets), prompt_length=cfg.prompt_length,
                                    teacher_steps=cfg.num_train_steps, source_steps=cfg.num_train_steps,
                                    target_steps=cfg.num_train_steps, few_shot=(), target_multitask=False)
  result = mpt.run_pipeline(run_dir, mpt_cfg, base)
  return [{"method": "mpt", "task": task, "seed": seed, "metrics": metrics}
          for task, metrics in result["targets"].items()]


def run_xprompt(run_dir: str, settings: Settings, cfg: CompareConfig, task: str, seed: int) -> list[dict]:
  """XPrompt with every control -> one record per variant (`xprompt/<variant>`, the best ratio per variant)."""
  from xprompt_jax.methods.xprompt import XPrompt
  from xprompt_jax.pipelines import xprompt as xprompt_lib
  from xprompt_jax.pipelines import xprompt_parts
  s = settings.for_run(task, seed, cfg.inputs_lengths.get(task))
  pipeline_cfg = xprompt_lib.XPromptPipelineConfig(
      ratios=tuple(cfg.xprompt_ratios), reversed_control=True, random_control=True, length_control=True,
      token_only=True, piece_only=True, control_seed=seed, plots=False,
      importance_max_examples=cfg.xprompt_importance_examples, num_shots=cfg.num_shots, shots_seed=cfg.shots_seed)
  out = xprompt_lib.run_xprompt(run_dir, pipeline_cfg=pipeline_cfg,
                                method=XPrompt(length=cfg.prompt_length, pieces=cfg.xprompt_pieces,
                                               prompt_init="sampled_vocab"), **s.train_kwargs())
  if out["preempted"]:
    raise stages.Preempted(out["stopped"])
  if out["rows"] is None:
    raise RuntimeError(f"XPrompt stopped early: {out['stopped']}")
  best = xprompt_parts.best_per_variant(out["rows"])
  return [{"method": f"xprompt/{variant}", "task": task, "seed": seed,
           "metrics": {compare_report.SCORE_METRIC: float(row["metric"])}, "ratio": row["ratio"]}
          for variant, row in best.items()]


def planned_runs(cfg: CompareConfig) -> list[tuple[str, str, Optional[str], int]]:
  """(run folder, method, task or None for MPT, seed) of every run, in execution order."""
  runs = []
  for seed in cfg.seeds:
    for method in cfg.methods:
      if method == "mpt":
        runs.append((f"mpt/seed{seed}", method, None, seed))
      elif method == "xprompt":
        runs += [(f"xprompt/{task}/seed{seed}", method, task, seed) for task in (cfg.xprompt_tasks or cfg.tasks)]
      else:
        runs += [(f"{method}/{task}/seed{seed}", method, task, seed) for task in cfg.tasks]
  return runs


def run_all(results_dir: str, cfg: CompareConfig, settings: Settings, run_missing: bool = True) -> list[dict]:
  """Runs (or resumes) every planned run, each a `training.stages` stage (its records in `<run>/result.json`);
  returns every record (a failed run becomes a record with "error"). With `run_missing=False` only the finished
  runs' records are read (the page then lists the others as missing). A preempted run raises `stages.Preempted`
  (its checkpoint saved, no record): the same command resumes it."""
  records = []
  for folder, method, task, seed in planned_runs(cfg):
    run_dir = os.path.join(results_dir, folder)
    if not run_missing and not stages.is_done(run_dir):
      print(f"compare: {folder} not finished (left out: page only)")
      continue
    start = time.time()

    def work(method=method, task=task, seed=seed, run_dir=run_dir) -> list[dict]:
      if method == "mpt":
        new = run_mpt(run_dir, settings, cfg, seed)
      elif method == "xprompt":
        new = run_xprompt(run_dir, settings, cfg, task, seed)
      elif method == "model_tuning":
        new = run_model_tuning(run_dir, settings, cfg, task, seed)
      else:
        new = run_single(run_dir, settings, method, cfg, task, seed)
      seconds = (time.time() - start) / max(len(new), 1)
      return [{**r, "seconds": seconds} for r in new]

    try:
      records += stages.run(run_dir, work, label=f"compare: {folder}")
    except stages.Preempted:
      raise
    except Exception as e:  # pylint: disable=broad-except  (one failed run must not lose the others)
      message = f"{type(e).__name__}: {e}".splitlines()[0][:300]
      print(f"compare: {folder} failed: {message}\n{traceback.format_exc()}")
      records.append({"method": method, "task": task or "(all targets)", "seed": seed, "metrics": {},
                      "error": message, "seconds": time.time() - start})
  with open(os.path.join(results_dir, RESULTS_NAME), "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
  return records


@gin.configurable(denylist=["results_dir", "page_path"])
def compare(results_dir: str, page_path: str, *, cfg: Optional[CompareConfig] = None,
            command: str = "python bench/compare_methods.py",
            title: str = "Method comparison on the local backbone", run_missing: bool = True) -> dict[str, Any]:
  """Runs everything (resuming; `run_missing=False`: nothing new), then writes the page (headed `title`) from the
  records; returns {"records", "page"}."""
  cfg = cfg or CompareConfig()
  settings = settings_from_gin(cfg)
  os.makedirs(results_dir, exist_ok=True)
  records = run_all(results_dir, cfg, settings, run_missing)
  lengths = dict(settings.data.task_feature_lengths)
  tasks = list(dict.fromkeys([*cfg.tasks, *(cfg.mpt_targets if "mpt" in cfg.methods else ())]))
  max_examples = settings.eval.max_examples
  chain = compare_report.pretraining_chain(settings.train.initial_checkpoint)
  origin = ("random weights" if not settings.train.initial_checkpoint else
            "pretrained here" if chain else "given checkpoint")
  constants = {t: constant_baselines(t, lengths, max_examples) for t in tasks}
  majority = {t: c["majority"] for t, c in constants.items()}
  method_names = [m for m in cfg.methods if m != "xprompt"]
  if "xprompt" in cfg.methods:
    method_names += [f"xprompt/{v}" for v in ("prompt_tuning", "xprompt", "reversed", "random", "length",
                                               "token_only", "piece_only")]
  method_tasks = {m: list(cfg.tasks) for m in method_names}
  method_tasks["mpt"] = list(cfg.mpt_targets)
  method_tasks.update({m: list(cfg.xprompt_tasks or cfg.tasks) for m in method_names if m.startswith("xprompt/")})
  per_task = (" (" + ", ".join(f"{t}: {n}" for t, n in sorted(dict(cfg.inputs_lengths).items()))
              + " in the single-task runs)") if cfg.inputs_lengths else ""
  seed_count = f"{len(cfg.seeds)} seed{'s' if len(cfg.seeds) != 1 else ''}"
  mpt_last = "; MPT reports its last evaluation" if "mpt" in cfg.methods else ""
  last_tabled = ("; the single-run methods' last evaluations (prompt, prefix and model tuning), which involve no "
                 "selection at all, are tabled too" if compare_report.has_last_evaluations(records) else "")
  staged = [name for name, m in (("MPT", "mpt"), ("XPrompt", "xprompt")) if m in cfg.methods]
  shots = (f"{cfg.num_shots}-shot: every run trains on the same {cfg.num_shots} rows of its task's training split, "
           f"drawn with seed {cfg.shots_seed} (listed in each run folder's shots.json), cycled in a reshuffled "
           f"order; " if cfg.num_shots is not None else "")
  protocol = (f"{shots}{seed_count} {list(cfg.seeds)}; {cfg.num_train_steps} training steps per run"
              f"{' (per stage for ' + ' and '.join(staged) + ')' if staged else ''}, evaluated every "
              f"{cfg.eval_period} steps on the official validation file"
              f"{f' (at most its first {max_examples} rows)' if max_examples else ''}; a "
              f"run's number is its best evaluation (early stopping on validation, as the papers do, which favours "
              f"runs whose predictions swing between evaluations{mpt_last}{last_tabled}). "
              f"Prompt length {cfg.prompt_length}"
              f"{f', prefix length {cfg.prefix_length}' if 'prefix' in cfg.methods else ''}, batch "
              f"{settings.data.batch_size}, inputs {settings.data.inputs_length} tokens{per_task}, optimizer "
              f"{settings.opt.optimizer} lr {settings.opt.learning_rate}."
              + (f" MPT sources: {', '.join(cfg.mpt_sources)} (local GLUE re-split train)." if "mpt" in cfg.methods
                 else "")
              + (f" XPrompt ratios {list(cfg.xprompt_ratios)}, {cfg.xprompt_pieces} pieces."
                 if "xprompt" in cfg.methods else "")
              + (f" Model tuning (every parameter; a control): Adafactor with parameter-scaled updates at a constant "
                 f"{cfg.model_tuning_learning_rate:g}, dropout {cfg.model_tuning_dropout:g}."
                 if "model_tuning" in cfg.methods else ""))
  text = compare_report.write_page(
      page_path, records, methods=method_names, tasks=tasks, majority=majority,
      best_constant={t: c["best_constant"] for t, c in constants.items()},
      prior_loss={t: c["prior_loss"] for t, c in constants.items()},
      meta={"title": title, "command": command, "results": os.path.join(results_dir, RESULTS_NAME),
            "protocol": protocol,
            "backbone_line": compare_report.backbone_line(settings.train.initial_checkpoint, settings.config, chain),
            "pretraining": chain,
            "plot_title": f"{settings.config.name} ({origin}), {seed_count}, mean ± std",
            "machine": f"{os.cpu_count()} CPU cores", "method_tasks": method_tasks})
  return {"records": records, "page": text}
