"""Held-out check of the SuperGLUE/GLUE task text and metrics against Google's `t5` package (0.9.4).

For every local split under <shared>/data that a registered `super_glue_*` / `glue_*` task reads (the files in its
`sources.HybridSource.local_splits`; `_rank` variants excluded), it compares row by row, in file order:

* raw rows: our local reader (`tasks/sources.py`) vs reference rows read from the same file by TFDS's own generators
  (`tensorflow_datasets.text.{super_glue,glue}` `_generate_examples`, labels encoded with the builder's label
  classes; MRPC dev.tsv mirrors TFDS's MRPC reader) or, for the project-only re-split GLUE json, a minimal reader
  here keyed by the TFDS builder's feature order and label classes;
* text: our task's text preprocessor (everything before `seqio.preprocessors.tokenize`) on our rows vs T5's
  preprocessor for the task as `t5/data/tasks.py` builds it (`glue_utils.get_glue_text_preprocessor(config)`,
  `preprocessors.wsc_simple` for the WSC simple tasks) on the reference rows: `inputs`, `targets` and every other
  key T5 keeps (idx, idx/*, answers, label);
* metrics, on labelled splits: random predictions (label words, invalid words that postprocess to -1, numbers,
  spans) postprocessed by our task and by T5's postprocess fn, then our task's `metric_fns` vs T5's metrics for the
  task (`glue_utils.get_{super_,}glue_metric`); values must agree within 1e-6 (3 trials, invalid rates 0, .15, .6).

Run from the repo root (needs `pip install --no-deps t5==0.9.4`; nice it on a shared machine):

    nice -n 19 .venv/bin/python bench/t5_reference.py [--max_rows N] [--only SUBSTRING]

Prints one line per task/split (rows compared; raw, text and postprocessed rows differing; metric max abs
difference and the metric keys compared), then up to two examples of each kind of difference; exits 1 on any.
"""
import argparse
import csv
import importlib.util
import json
import math
import os
import sys
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402

import xprompt_jax.tasks  # noqa: E402  (registers every task)
from xprompt_jax.tasks import sources  # noqa: E402

TOL = 1e-6
INVALID_RATES = (0.0, 0.15, 0.6)
INVALID_WORDS = ("", "maybe", "<unk>", "none of them")
# Our metric keys are T5's (CB's mean_3class_f1, MultiRC's f1 for F1a): every key is compared with the same key.


def import_t5() -> types.SimpleNamespace:
  """T5's preprocessors, postprocessors, metrics and glue_utils; ImportError when `t5` is not installed."""
  if "babel" not in sys.modules and importlib.util.find_spec("babel") is None:
    # t5/data/preprocessors.py imports babel at module level only for `translate` (language names), which this
    # bench never calls: an empty stub stands in rather than installing it.
    sys.modules["babel"] = types.ModuleType("babel")
  from t5.data import glue_utils, postprocessors, preprocessors
  from t5.evaluation import metrics
  return types.SimpleNamespace(pre=preprocessors, post=postprocessors, metrics=metrics, glue_utils=glue_utils)


def tfds_builder_config(bench: str, config: str):
  from tensorflow_datasets.text import glue, super_glue
  return (super_glue.SuperGlue if bench == "super_glue" else glue.Glue).builder_configs[config]


# ----------------------------------------------------------------------------------------------------------------------
# Which splits, and the reference rows.


def local_cases(only: str = "") -> list[tuple[str, str, str, str, str]]:
  """(task, split, tfds benchmark, tfds config, local path) for every local SuperGLUE/GLUE split of a text task."""
  out = []
  for name in sorted(seqio.TaskRegistry.names()):
    if not name.startswith(("super_glue_", "glue_")) or name.endswith("_rank") or only not in name:
      continue
    src = seqio.get_mixture_or_task(name).source
    if not isinstance(src, sources.HybridSource) or not src.tfds_name:
      continue
    bench, config = src.tfds_name.split(":")[0].split("/")
    for split, spec in sorted(src.local_splits.items()):
      path = spec.path()
      if path is not None and path.is_file():
        out.append((name, split, bench, config, str(path)))
  return out


def _mrpc_dev_rows(path: str):
  """TFDS builds MRPC from the MSR files (`_generate_example_mrpc_files`); this mirrors its row mapping on the GLUE
  dev.tsv (BOM skipped as TFDS does). idx is the dev.tsv row number (TFDS numbers rows of the MSR train file)."""
  with open(path, encoding="utf-8") as f:
    f.seek(3)
    for n, row in enumerate(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
      yield n, {"sentence1": row["#1 String"], "sentence2": row["#2 String"], "label": int(row["Quality"]),
                "idx": n}


def _resplit_rows(path: str, cfg):
  """The re-split GLUE json (`{"0": {"text_a", "text_b", "label"}}`): text_a/text_b are the builder's text features
  in order, labels the builder's class names (or indices as strings; STS-B a float32 score)."""
  with open(path, encoding="utf-8") as f:
    records = json.load(f)
  feats = list(cfg.text_features)
  for key, rec in records.items():
    ex = {feats[0]: rec["text_a"]}
    if len(feats) > 1:
      ex[feats[1]] = rec["text_b"]
    ex["label"] = cfg.process_label(rec["label"]) if not cfg.label_classes else rec["label"]
    ex["idx"] = int(key)
    yield key, ex


def reference_rows(bench: str, config: str, path: str, split: str, max_rows: int | None) -> list[dict]:
  cfg = tfds_builder_config(bench, config)
  this = types.SimpleNamespace(builder_config=cfg)
  if bench == "super_glue":
    from tensorflow_datasets.text import super_glue
    gen = super_glue.SuperGlue._generate_examples(this, path, "test" if path.endswith("test.jsonl") else split)
  elif path.endswith(".tsv"):
    from tensorflow_datasets.text import glue
    gen = _mrpc_dev_rows(path) if config == "mrpc" else glue.Glue._generate_examples(this, path, "validation")
  else:
    gen = _resplit_rows(path, cfg)
  labels = list(cfg.label_classes or ())
  rows = []
  for _, ex in gen:
    if max_rows is not None and len(rows) >= max_rows:
      break
    ex = dict(ex)
    if labels and isinstance(ex.get("label"), str):  # tfds ClassLabel encoding: a class name, else an index.
      ex["label"] = labels.index(ex["label"]) if ex["label"] in labels else int(ex["label"])
    rows.append(ex)
  return rows


def _spec(key: str, value):
  if isinstance(value, dict):
    return {k: _spec(k, v) for k, v in value.items()}
  if isinstance(value, str):
    return tf.TensorSpec([], tf.string)
  if isinstance(value, (list, tuple)):
    return tf.TensorSpec([None], tf.string)
  if isinstance(value, (float, np.floating)):
    return tf.TensorSpec([], tf.float32)
  return tf.TensorSpec([], tf.int64 if key == "label" else tf.int32)  # TFDS: ClassLabel int64, idx/indices int32.


def rows_to_dataset(rows: list[dict]) -> tf.data.Dataset:
  spec = {k: _spec(k, v) for k, v in rows[0].items()}
  return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=spec)


# ----------------------------------------------------------------------------------------------------------------------
# Text: ours vs T5.


def our_rows_and_text(task: seqio.Task, split: str, max_rows: int | None) -> tuple[list[dict], list[dict]]:
  ds = task.source.get_dataset(split, shuffle=False)
  if max_rows is not None:
    ds = ds.take(max_rows)
  raw = list(ds.as_numpy_iterator())
  for prep in task.preprocessors:
    if prep is seqio.preprocessors.tokenize:
      break
    ds = prep(ds)
  return raw, list(ds.as_numpy_iterator())


def t5_text(t5, bench: str, config: str, task_name: str, rows: list[dict]) -> list[dict]:
  """T5's text preprocessing of the reference rows, as `t5/data/tasks.py` registers the task."""
  ds = rows_to_dataset(rows)
  if config == "wsc.fixed":  # T5 registers WSC only as the `_simple_train` / `_simple_eval` tasks.
    ds = t5.pre.wsc_simple(ds, correct_referent_only=task_name.endswith("_train"))
  else:
    if config == "axb":
      ds = t5.pre.rekey(ds, key_map={"premise": "sentence1", "hypothesis": "sentence2", "label": "label",
                                     "idx": "idx"})
    ds = t5.glue_utils.get_glue_text_preprocessor(tfds_builder_config(bench, config))(ds)
  return list(ds.as_numpy_iterator())


def norm(v):
  """Plain Python values (str for bytes, tuples for arrays) so rows from both pipelines compare with ==."""
  if isinstance(v, dict):
    return {k: norm(x) for k, x in v.items()}
  if isinstance(v, np.ndarray):
    return tuple(norm(x) for x in v.tolist())
  if isinstance(v, (list, tuple)):
    return tuple(norm(x) for x in v)
  if isinstance(v, bytes):
    return v.decode("utf-8")
  if isinstance(v, np.generic):
    return v.item()
  return v


def diff_rows(ours: list[dict], theirs: list[dict]) -> list[tuple[int, dict, dict]]:
  """(row, ours, theirs) restricted to the keys that differ, for each row whose keys of `theirs` differ."""
  out = []
  for i in range(max(len(ours), len(theirs))):
    a = norm(ours[i]) if i < len(ours) else {}
    b = norm(theirs[i]) if i < len(theirs) else {}
    keys = [k for k in (b or a) if a.get(k, "<missing>") != b.get(k, "<missing>")]
    if keys:
      out.append((i, {k: a.get(k, "<missing>") for k in keys}, {k: b.get(k, "<missing>") for k in keys}))
  return out


# ----------------------------------------------------------------------------------------------------------------------
# Metrics: ours vs T5 on identical random predictions.


def t5_eval_fns(t5, bench: str, config: str, task_name: str):
  """(postprocess fn, metric fns) of the T5 task."""
  if config == "wsc.fixed":
    return (t5.post.wsc_simple, [t5.metrics.accuracy]) if task_name.endswith("_eval") else (None, [])
  cfg = tfds_builder_config(bench, config)
  metric = t5.glue_utils.get_super_glue_metric if bench == "super_glue" else t5.glue_utils.get_glue_metric
  return t5.glue_utils.get_glue_postprocess_fn(cfg), metric(config)


def random_prediction(rng: np.random.Generator, config: str, labels, ex: dict, p_invalid: float) -> str:
  words = norm(ex["inputs"]).split()
  pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
  bad = rng.random() < p_invalid
  if config == "stsb":
    return pick(("n/a", "", "five", "%.3f" % rng.uniform(0, 5))) if bad else "%.1f" % (rng.integers(26) / 5)
  if config == "record":
    answer = pick(norm(ex["answers"]) or ("<unk>",))
    return pick(("", pick(words), " ".join(words[:3]), answer.upper() + ".")) if bad else pick(
        (answer, "the " + answer, answer.lower(), pick(words)))
  if config == "wsc.fixed":
    ref = norm(ex["targets"])
    return pick(("", pick(words), ref + "'s hat", "  ")) if bad else pick(
        (ref, "The " + ref, ref.upper(), ref.split(" ")[-1], pick(words)))
  return pick(INVALID_WORDS + (labels[0].upper(), " " + labels[-1])) if bad else pick(labels)


def _value(x):
  return norm(x["value"]) if isinstance(x, dict) else norm(x)


def compare_metrics(ours: dict, theirs: dict) -> tuple[float, list[str], list[str]]:
  """(max abs difference, keys compared, problems); a key without a counterpart counts as an infinite difference."""
  theirs = {k: float(v) for k, v in theirs.items()}
  worst, keys, problems, used = 0.0, [], [], set()
  for k, v in ours.items():
    tk = k
    if tk not in theirs:
      problems.append(f"our {k!r} has no T5 counterpart (T5 reports {sorted(theirs)})")
      worst = math.inf
      continue
    used.add(tk)
    keys.append(k)
    a, b = float(v), theirs[tk]
    d = 0.0 if (math.isnan(a) and math.isnan(b)) else abs(a - b)
    worst = max(worst, math.inf if math.isnan(d) else d)
    if not d <= TOL:
      problems.append(f"{k}: ours {a!r} vs T5 {tk} {b!r}")
  for k in set(theirs) - used:
    problems.append(f"T5 reports {k!r}, ours does not")
    worst = math.inf
  return worst, keys, problems


def metric_check(t5, task: seqio.Task, bench: str, config: str, ours_text: list[dict], t5_rows: list[dict],
                 seed: int) -> dict:
  t5_post, t5_fns = t5_eval_fns(t5, bench, config, task.name)
  ours_fns = list(task.predict_metric_fns)
  if not ours_fns and not t5_fns:
    return {"metric": "none (no metric fns in either)", "post_diff": 0, "metric_diff": 0.0, "problems": []}
  labels = list(tfds_builder_config(bench, config).label_classes or ())
  n = min(len(ours_text), len(t5_rows))
  add = lambda ex: {**ex, "inputs_pretokenized": ex["inputs"], "targets_pretokenized": ex["targets"]}  # noqa: E731
  ours_ex, t5_ex = [add(e) for e in ours_text[:n]], [add(e) for e in t5_rows[:n]]
  t5_post = t5_post or (lambda x, **_: x)
  ours_t = [task.postprocess_fn(norm(e["targets"]), example=e, is_target=True) for e in ours_ex]
  t5_t = [t5_post(norm(e["targets"]), example=e, is_target=True) for e in t5_ex]
  post_diffs = [(i, a, b) for i, (a, b) in enumerate(zip(ours_t, t5_t)) if norm(a) != norm(b)]
  worst, keys, problems = 0.0, [], []
  rng = np.random.default_rng(seed)
  for p_invalid in INVALID_RATES:
    preds = [random_prediction(rng, config, labels, e, p_invalid) for e in ours_ex]
    ours_p = [task.postprocess_fn(p, example=e, is_target=False) for p, e in zip(preds, ours_ex)]
    t5_p = [t5_post(p, example=e, is_target=False) for p, e in zip(preds, t5_ex)]
    post_diffs += [(i, {"prediction": p, "ours": _value(a)}, {"t5": _value(b)})
                   for i, (p, a, b) in enumerate(zip(preds, ours_p, t5_p)) if _value(a) != _value(b)]
    ours_m, t5_m = {}, {}
    for fn in ours_fns:
      ours_m.update(fn(ours_t, ours_p))
    for fn in t5_fns:
      t5_m.update(fn(t5_t, t5_p))
    w, keys, probs = compare_metrics(ours_m, t5_m)
    worst = max(worst, w)
    problems += [f"invalid rate {p_invalid}: {p}" for p in probs]
  return {"metric": ",".join(keys), "post_diff": len(post_diffs), "post_examples": post_diffs[:2],
          "metric_diff": worst, "problems": problems}


# ----------------------------------------------------------------------------------------------------------------------


def run_case(t5, name: str, split: str, bench: str, config: str, path: str, max_rows: int | None, seed: int) -> dict:
  task = seqio.get_mixture_or_task(name)
  raw, ours_text = our_rows_and_text(task, split, max_rows)
  ref = reference_rows(bench, config, path, split, max_rows)
  raw_diffs = diff_rows(raw, ref)
  theirs = t5_text(t5, bench, config, name, ref)
  text_diffs = diff_rows(ours_text, theirs)
  out = {"task": name, "split": split, "file": os.path.relpath(path, sources.local_data_dir()),
         "raw_rows": len(ref), "rows": max(len(ours_text), len(theirs)), "raw_diff": len(raw_diffs),
         "text_diff": len(text_diffs), "raw_examples": raw_diffs[:2], "text_examples": text_diffs[:2]}
  if ref and all(r.get("label", 0) == -1 for r in ref):
    out.update(metric="n/a (unlabelled split)", post_diff=0, metric_diff=0.0, problems=[])
  else:
    out.update(metric_check(t5, task, bench, config, ours_text, theirs, seed))
  out["ok"] = not (out["raw_diff"] or out["text_diff"] or out["post_diff"] or out["problems"]
                   or not out["metric_diff"] <= TOL)
  return out


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--max_rows", type=int, default=None, help="raw rows read per split (default: all)")
  parser.add_argument("--only", default="", help="only tasks whose name contains this")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  t5 = import_t5()
  xprompt_jax.tasks.set_data_source("local")
  try:
    cases = local_cases(args.only)
    if not cases:
      raise SystemExit(f"no local SuperGLUE/GLUE split found (shared data dir: {sources.local_data_dir()})")
    results = []
    start = time.time()
    for case in cases:
      r = run_case(t5, *case, args.max_rows, args.seed)
      results.append(r)
      print(f"{'ok  ' if r['ok'] else 'DIFF'} {r['task']:36s} {r['split']:11s} rows {r['rows']:5d} "
            f"(raw {r['raw_rows']:5d})  raw_diff {r['raw_diff']}  text_diff {r['text_diff']}  "
            f"post_diff {r['post_diff']}  metric_max_abs_diff {r['metric_diff']:.1e} [{r['metric']}]", flush=True)
    for r in results:
      if r["ok"]:
        continue
      print(f"\n== {r['task']} [{r['split']}] ({r['file']})")
      for kind in ("raw", "text", "post"):
        for i, a, b in r.get(f"{kind}_examples", []):
          print(f"  {kind} row {i}:\n    ours: {a}\n    T5:   {b}")
      for p in r["problems"][:6]:
        print(f"  metric: {p}")
    bad = [r for r in results if not r["ok"]]
    print(f"\n{len(results)} task/splits, {sum(r['rows'] for r in results)} rows, {len(bad)} with differences; "
          f"{time.time() - start:.0f}s")
    return results
  finally:
    xprompt_jax.tasks.set_data_source(None)


if __name__ == "__main__":
  sys.exit(1 if any(not r["ok"] for r in main()) else 0)
