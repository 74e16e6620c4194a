"""The paper tables: each one command (`xprompt-jax table --table=NAME --gin_file=paper/...`) that runs every task
x seed x stage of the table, one model_dir each, and writes the table beside the paper's quoted numbers."""
import importlib

# name -> (module, class) of every paper table.
_TABLES = {
    "lester_superglue": ("lester", "LesterSuperGlue"),
    "lester_init": ("lester_sweeps", "LesterInit"),
    "lester_length": ("lester_sweeps", "LesterLength"),
    "lester_objective": ("lester_sweeps", "LesterObjective"),
    "lester_lm_steps": ("lester_sweeps", "LesterLMSteps"),
    "lester_mrqa": ("lester_transfer", "LesterMRQA"),
    "lester_paraphrase": ("lester_transfer", "LesterParaphrase"),
    "prefix_vs_prompt": ("prefix_prompt", "PrefixVsPrompt"),
    "xprompt_superglue": ("xprompt_tables", "XPromptSuperGlue"),
    "xprompt_fewshot": ("xprompt_tables", "XPromptFewShot"),
    "xprompt_controls": ("xprompt_tables", "XPromptControls"),
    "mpt_glue_superglue": ("mpt_tables", "MPTGlueSuperGlue"),
    "mpt_mrqa_others": ("mpt_tables", "MPTMRQAOthers"),
    "mpt_fewshot": ("mpt_tables", "MPTFewShot"),
    "mpt_ablations": ("mpt_tables", "MPTAblations"),
}
TABLES = tuple(_TABLES)


def get_table(name: str):
  """The table named `name`; a one-line error listing the tables for another name."""
  if name not in _TABLES:
    raise ValueError(f"--table={name!r} is not a paper table; known: {', '.join(TABLES)}")
  module, cls = _TABLES[name]
  return getattr(importlib.import_module(f"xprompt_jax.tables.{module}"), cls)()
