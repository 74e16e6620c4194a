"""The names of the task variants (`tasks/registry_utils.add_taskless_task`, `tasks/variants`), importable without
registering every task (importing anything under `xprompt_jax.tasks` registers them all, which the table commands'
`--list` and job planning do not need)."""

TASKLESS_PREFIX = "taskless_"  # The inputs without T5's task name (Lester et al. 2021; prompt-tuning's taskless_*).
SENTINEL_PREFIX = "sentinel_"  # Every target behind T5's first sentinel (Lester et al.'s span corruption + sentinel).
VARIANT_PREFIXES = (SENTINEL_PREFIX, TASKLESS_PREFIX)  # Outermost first: sentinel_taskless_super_glue_rte_v102.


def base_task_name(name: str) -> str:
  """The task a variant is made from (`sentinel_taskless_super_glue_rte_v102` -> `super_glue_rte_v102`)."""
  for prefix in VARIANT_PREFIXES:
    if name.startswith(prefix):
      return base_task_name(name.removeprefix(prefix))
  return name


def transfer_task_name(source: str, target: str) -> str:
  """The zero-shot transfer task evaluating a `glue_<source>` prompt on `glue_<target>` (QQP <-> MRPC)."""
  return f"{TASKLESS_PREFIX}glue_{target}_from_{source}_v002"
