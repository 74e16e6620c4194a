"""`xprompt-jax ensemble`: N prompts of one frozen model evaluated in one replicated batch, majority vote.

    xprompt-jax ensemble --gin_file=runs/smoke_cpu.gin --prompts=s0=/runs/rte_s0,s1=/runs/rte_s1,s2=/runs/rte_s2 \
      [--task=super_glue_rte_v102] [--output=/tmp/ensemble.json]

Prints each prompt's metrics, their mean and best, and the ensemble's (Lester et al. §7). Prompts are runs trained
with the gin config (their base models must match), PEFT prompt-tuning adapters or prompt-tuning files; all of
one length. The replicated batch has N x EvalConfig.batch_size rows.
"""
from absl import flags

from xprompt_jax.commands import common

common.define_gin_flags()
common.define_once(flags.DEFINE_list, "prompts", None, "NAME=SOURCE (or SOURCE), at least two.")
common.define_once(flags.DEFINE_string, "step", "latest", "Checkpoint of run sources: latest, best or a step number.")
common.define_once(flags.DEFINE_string, "task", None, "Task to evaluate (default: the evaluation tasks of "
                   "DataConfig.mixture_or_task_name, e.g. MNLI matched and mismatched).")
common.define_once(flags.DEFINE_string, "output", None, "Also write the metrics as json here.")


def evaluate_runs(sources, tasks=None, step: str = "latest"):
  """{task: metrics} of the prompts `sources` ({name: run dir, PEFT adapter or prompt file}) ensembled on each
  of `tasks` (None: the evaluation tasks of DataConfig.mixture_or_task_name, as training evaluates it: MNLI on
  matched + mismatched, WSC simple_train on simple_eval) with the gin-configured frozen model and evaluation, plus
  (eval_cfg, prompts array) for the printout. `ensemble/<metric>`, `<name>/<metric>`, `mean/...`, `best/...`."""
  from xprompt_jax.evaluation import ensemble
  from xprompt_jax.evaluation import evaluator as eval_lib
  from xprompt_jax.interop import run_prompts
  from xprompt_jax.models import t5
  from xprompt_jax.models.config import T5Config
  from xprompt_jax.training import data as data_lib
  from xprompt_jax.training import loop
  from xprompt_jax.training import partitioning
  config, mesh_cfg, data_cfg = T5Config(), partitioning.MeshConfig(), data_lib.DataConfig()
  loaded = {name: run_prompts.load_prompt(src, step) for name, src in sources.items()}
  frozen, frozen_ref = loop.load_frozen(loop.TrainConfig(), config, partitioning.make_mesh(mesh_cfg), mesh_cfg.rules)
  ensemble.check_same_base({"gin-configured frozen model": frozen_ref,
                            **{name: ref for name, (_, ref) in loaded.items() if ref is not None}})
  names = list(loaded)
  prompts = ensemble.stack_prompts([loaded[n][0] for n in names], names, config.emb_dim)
  eval_cfg = loop.eval_lib_defaults(eval_lib.EvalConfig(), data_cfg)
  if not tasks:
    from xprompt_jax.tasks import registry_utils
    tasks = registry_utils.evaluation_tasks(data_cfg.mixture_or_task_name, eval_cfg.split)
  out = {}
  for task in tasks:
    evaluator = eval_lib.make_evaluator(task, t5.T5(config), config, eval_cfg)
    if not isinstance(evaluator, eval_lib.TaskEvaluator):
      raise ValueError(f"--task={task!r} must name a single task (not a mixture) for ensembling")
    out[evaluator.task_name] = ensemble.PromptEnsemble(evaluator).evaluate(frozen, prompts, names)
  return out, eval_cfg, prompts


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected positional arguments: {argv[1:]}")
  if not flags.FLAGS.prompts:
    raise ValueError("--prompts=NAME=SOURCE,... is required (two or more)")
  common.parse_gin_from_flags()
  import json
  from xprompt_jax.interop import run_prompts
  sources = run_prompts.parse_named_sources(flags.FLAGS.prompts)
  results, eval_cfg, prompts = evaluate_runs(sources, [flags.FLAGS.task] if flags.FLAGS.task else None,
                                             flags.FLAGS.step)
  for task, metrics in results.items():
    width = max(map(len, metrics))
    print(f"{len(sources)} prompts ({prompts.shape[1]}x{prompts.shape[2]}) on {task} "
          f"[{eval_cfg.split}, {eval_cfg.mode}], one batch of {len(sources)}x{eval_cfg.batch_size} rows:")
    print("\n".join(f"  {k:<{width}}  {v:.4g}" for k, v in metrics.items()))
  if flags.FLAGS.output:
    (task, metrics), *more = results.items()
    record = {"task": task, "prompts": sources, "metrics": metrics}  # The first task's, as before; all of them:
    with open(flags.FLAGS.output, "w", encoding="utf-8") as f:
      json.dump({**record, "tasks": results} if more else record, f, indent=2)
    print(f"wrote {flags.FLAGS.output}")
