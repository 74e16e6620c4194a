"""Lester et al. (2021), robustness to domain shift: the MRQA table (trained on SQuAD, evaluated in and out of
domain) and the QQP <-> MRPC zero-shot transfer table, each a table and a plot.

    xprompt-jax table --table=lester_mrqa --gin_file=paper/prompt_tuning_xxl.gin --results_dir=/mnt/B/mrqa_xxl
    xprompt-jax table --table=lester_paraphrase --gin_file=paper/prompt_tuning_xxl.gin --results_dir=/mnt/B/pp_xxl

MRQA: `squad/seed<k>` trains a prompt on SQuAD (`squad_v010_allanswers`, T5's format, which has no task name to
drop) and evaluates it at every evaluation on SQuAD's dev set and the six out-of-domain MRQA 2019 dev sets
(`mrqa_<set>_v100`, TFDS's `test` split, read as `validation`); the prompt starts from sampled vocabulary (answers
are free text); answers are decoded up to 32 tokens and scored with every reference answer. Paraphrase:
`<source>_to_<target>/seed<k>` trains on the taskless source task and evaluates on it and, zero-shot, on the
target's dev set read in the source's label words (`taskless_glue_<target>_from_<source>_v002`, prompt-tuning's
`glue_transfer` tasks). A prompt counts at its last evaluation; cells are mean ± std over seeds.
"""
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from xprompt_jax import variant_names
from xprompt_jax.tables import base
from xprompt_jax.tables import lester

SEEDS = (0, 1, 2)  # The paper reports mean ± std; the seeds give no run count: 3 chosen.
SQUAD = "squad_v010_allanswers"
# (label, task, domain) in the paper's order; the out-of-domain sets are dev sets of the MRQA 2019 shared task.
MRQA_SETS = (("SQuAD", SQUAD, "in domain, Wiki"), ("TextbookQA", "mrqa_textbook_qa_v100", "Book"),
             ("BioASQ", "mrqa_bio_asq_v100", "Bio"), ("RACE", "mrqa_race_v100", "Exam"),
             ("RE", "mrqa_relation_extraction_v100", "Wiki"), ("DuoRC", "mrqa_duo_rc_v100", "Movie"),
             ("DROP", "mrqa_drop_v100", "Wiki"))
# The answers' length (the seeds are silent; the Lester recipe's 8 target tokens would cut SQuAD answers): 32.
QA_LENGTHS = "{'inputs': 512, 'targets': 32}"
# Quoted from ../shared/seeds/003_d13362ded1d43f30.txt: F1, model tuning and prompt tuning (mean ± std). The seed
# names no model size; Lester et al. run this table at XXL, so the quotes sit beside XXL runs only.
QUOTE_MRQA = {"SQuAD": ("94.9 ± 0.2", "94.8 ± 0.1"), "TextbookQA": ("54.3 ± 3.7", "66.8 ± 2.9"),
              "BioASQ": ("77.9 ± 0.4", "79.1 ± 0.3"), "RACE": ("59.8 ± 0.6", "60.7 ± 0.5"),
              "RE": ("88.4 ± 0.1", "88.8 ± 0.2"), "DuoRC": ("68.9 ± 0.7", "67.7 ± 1.1"),
              "DROP": ("68.9 ± 1.7", "67.1 ± 1.9")}
PAIRS = (("qqp", "mrpc"), ("mrpc", "qqp"))
# Accuracy / F1 on the target, model tuning and prompt tuning (same seed file).
QUOTE_PARAPHRASE = {("qqp", "mrpc"): ("73.1 ± 0.9 / 81.2 ± 2.1", "76.3 ± 0.1 / 84.3 ± 0.3"),
                    ("mrpc", "qqp"): ("74.9 ± 1.3 / 70.9 ± 1.2", "75.4 ± 0.8 / 69.7 ± 0.3")}
QUOTE_COLUMNS = ["paper (quoted): model tuning", "paper (quoted): prompt tuning"]
QUOTED_SIZE = "xxl"


def _decoded(record: Optional[Mapping[str, Any]], task: str, key: str) -> Optional[float]:
  if not record or task not in record["last"]:
    return None
  metrics = record["last"][task]
  value = metrics.get(f"decode/{key}", metrics.get(key))
  if value is None:
    raise KeyError(f"the evaluation of {task} reports {sorted(metrics)}, not decode/{key}")
  return float(value)


def _mean_std(values: Sequence[Optional[float]]) -> tuple[str, Optional[tuple[float, float]]]:
  if not values or any(v is None for v in values):
    return base.MISSING, None
  mean, std = float(np.mean(values)), float(np.std(values))
  return f"{base.fmt(mean)} ± {base.fmt(std)}", (mean, std)


def _quoted_points(quotes: Mapping[str, Sequence[str]], labels: Sequence[str], which: int) -> list:
  out = []
  for label in labels:
    mean, std = (float(x) for x in quotes[label][which].split("/")[-1].split("±"))
    out.append((label, mean, std))
  return out


class LesterMRQA(base.PaperTable):
  name = "lester_mrqa"
  title = "Domain transfer: prompt tuned on SQuAD, F1 on MRQA in and out of domain (Lester et al. 2021)"
  gin_pattern = "paper/prompt_tuning_{size}.gin"
  seed_file = "003_d13362ded1d43f30.txt"

  def jobs(self) -> list[base.Job]:
    evals = tuple(task for _, task, _ in MRQA_SETS)
    bindings = ("PromptTuning.prompt_init = 'sampled_vocab'", f"TASK_FEATURE_LENGTHS = {QA_LENGTHS}",
                "EvalConfig.targets_length = 32", f"TrainConfig.eval_tasks = {evals!r}")
    return [base.Job(f"squad/seed{s}", "train", (f"MIXTURE_OR_TASK_NAME = '{SQUAD}'", f"TrainConfig.seed = {s}",
                                                   f"DataConfig.seed = {s}", *bindings), task=SQUAD, seed=s)
            for s in SEEDS]

  def gather(self, records: Mapping[str, Any], size: str) -> base.Grid:
    runs = [records.get(f"squad/seed{s}") for s in SEEDS]
    rows, points = [], []
    for label, task, domain in MRQA_SETS:
      f1, value = _mean_std([_decoded(r, task, "f1") for r in runs])
      em, _ = _mean_std([_decoded(r, task, "em") for r in runs])
      rows.append((f"{label} ({domain})", [f1, em]))
      points.append((label, *(value or (None, None))))
    quoted = size == QUOTED_SIZE
    quotes = {f"{label} ({domain})": QUOTE_MRQA[label] for label, _, domain in MRQA_SETS} if quoted else {}
    labels = [label for label, _, _ in MRQA_SETS]
    series = {"prompt tuning (these runs)": points}
    if quoted:
      series["paper (quoted): prompt tuning"] = _quoted_points(QUOTE_MRQA, labels, 1)
      series["paper (quoted): model tuning"] = _quoted_points(QUOTE_MRQA, labels, 0)
    notes = [f"Seeds {list(SEEDS)} (the paper reports mean ± std; the seeds give no run count: 3 chosen), each at "
             "its last evaluation; F1 and EM of greedy decoding against every reference answer (T5's squad metric).",
             "Inputs: T5's SQuAD format (question: ... context: ...) truncated to 512 tokens; answers decoded up to 32 "
             "tokens (the seeds give no lengths).",
             f"Paper columns quoted from ../shared/seeds/{self.seed_file}" + (
                 " (the seed names no model size; Lester et al. report this table for XXL)." if quoted else
                 f": shown beside XXL runs only (this is {size})."),
             "In the paper prompt tuning beats model tuning on 4 of the 6 out-of-domain sets (TextbookQA +12.5)."]
    return base.Grid(f"{self.title} — T5 1.1 LM-adapted {size.upper()}", ["F1 (mean ± std)", "EM (mean ± std)"],
                     rows, quote_columns=QUOTE_COLUMNS if quoted else [], quotes=quotes, notes=notes,
                     plot={"x_label": "evaluation set (trained on SQuAD)", "y_label": "F1", "series": series})


def pair_folder(source: str, target: str, seed: int) -> str:
  return f"{source}_to_{target}/seed{seed}"


def _glue(name: str) -> str:
  return f"{variant_names.TASKLESS_PREFIX}glue_{name}_v002"


class LesterParaphrase(base.PaperTable):
  name = "lester_paraphrase"
  title = "Zero-shot transfer between paraphrase tasks, QQP <-> MRPC (Lester et al. 2021)"
  gin_pattern = "paper/prompt_tuning_{size}.gin"
  seed_file = "003_d13362ded1d43f30.txt"

  def jobs(self) -> list[base.Job]:
    jobs = []
    for source, target in PAIRS:
      evals = (_glue(source), variant_names.transfer_task_name(source, target))
      for s in SEEDS:
        jobs.append(base.Job(pair_folder(source, target, s), "train",
                             (*lester.prompt_bindings(_glue(source), s), f"TrainConfig.eval_tasks = {evals!r}"),
                             task=_glue(source), seed=s))
    return jobs

  def gather(self, records: Mapping[str, Any], size: str) -> base.Grid:
    rows, points = [], {"accuracy": [], "F1": []}
    for source, target in PAIRS:
      runs = [records.get(pair_folder(source, target, s)) for s in SEEDS]
      transfer = variant_names.transfer_task_name(source, target)
      cells = []
      for task in (transfer, _glue(source)):
        acc, acc_value = _mean_std([_decoded(r, task, "accuracy") for r in runs])
        f1, f1_value = _mean_std([_decoded(r, task, "f1") for r in runs])
        cells.append(f"{acc} / {f1}")
        if task != _glue(source):
          label = f"{source.upper()} -> {target.upper()}"
          points["accuracy"].append((label, *(acc_value or (None, None))))
          points["F1"].append((label, *(f1_value or (None, None))))
      ranked = [(r["last"].get(transfer, {}) if r else {}) for r in runs]
      cells.append(" / ".join(_mean_std([m.get(f"rank/{k}") for m in ranked] if all(ranked) else [None])[0]
                              for k in ("accuracy", "f1")))
      rows.append((f"train {source.upper()}, evaluate {target.upper()} (zero-shot)", cells))
    quoted = size == QUOTED_SIZE
    quotes = {label: QUOTE_PARAPHRASE[pair] for (label, _), pair in zip(rows, PAIRS)} if quoted else {}
    notes = [f"Seeds {list(SEEDS)} (the seeds give no run count: 3 chosen), each at its last evaluation; accuracy / "
             "F1 of greedy decoding, the target's answers read in the source's label words (duplicate = "
             "equivalent), on the target's dev set; the second column is the source's own dev set.",
             f"Paper columns quoted from ../shared/seeds/{self.seed_file} (accuracy / F1 on the target)" + (
                 "; the seed names no model size, Lester et al. report this table for XXL." if quoted else
                 f": shown beside XXL runs only (this is {size}).")]
    series = {f"prompt tuning, {k} (these runs)": v for k, v in points.items()}
    return base.Grid(f"{self.title} — T5 1.1 LM-adapted {size.upper()}",
                     ["target, zero-shot: acc / F1", "source (in domain): acc / F1",
                      "target, zero-shot (rank classification): acc / F1"], rows,
                     quote_columns=QUOTE_COLUMNS if quoted else [], quotes=quotes, notes=notes,
                     plot={"x_label": "transfer", "y_label": "score on the target's dev set", "series": series})
