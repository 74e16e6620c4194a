"""`xprompt-jax infer`: predictions of a trained run, as jsonl.

    xprompt-jax infer --gin_file=runs/smoke_cpu.gin --model_dir=/tmp/xprompt_smoke --output=/tmp/rte_val.jsonl
    xprompt-jax infer --gin_file=runs/smoke_cpu.gin --model_dir=/tmp/xprompt_smoke --inputs=IN.jsonl \
      --output=/tmp/preds.jsonl

    xprompt-jax infer --gin_file=paper/prompt_tuning_xxl.gin --model_dir=gs://B/rte --output_dir=gs://B/rte_infer

Without --inputs it predicts a task split (default: the training task's EvalConfig.split), one record per example
with inputs, targets and the predictions of the configured mode (rank scores per label, decoded text). With
--inputs (jsonl rows {"inputs": str, ...}) it decodes each row greedily (beam with EvalConfig.beam_size > 1) and
adds "prediction". The output appears atomically.

`--output_dir` writes T5X's infer layout instead (t5x/infer.py, mode 'predict'): one file
`<output_dir>/<task>-predict.jsonl-00000-of-00001` (with --inputs: `<inputs file stem>-predict...`) whose lines are
{"input": {"inputs_pretokenized": ..., "targets_pretokenized": ...}, "prediction": the decoded text} (not
postprocessed, as T5X writes it), so scripts that read T5X's inference files read these. It needs decoding
(EvalConfig.mode 'decode' or 'both', the paper configs' mode).
"""
import os
import time

from absl import flags
import numpy as np

from xprompt_jax.commands import common

common.define_gin_flags()
common.define_run_flags()
common.define_once(flags.DEFINE_string, "step", "latest", "Checkpoint: latest, best or a step number.")
common.define_once(flags.DEFINE_string, "task", None, "Task to predict (default: the training task).")
common.define_once(flags.DEFINE_string, "inputs", None,
                   "jsonl with {\"inputs\": str} rows to decode instead of a task.")
common.define_once(flags.DEFINE_string, "output", None, "jsonl to write.")
common.define_once(flags.DEFINE_string, "output_dir", None, "Write T5X infer's layout here instead of --output: "
                   "<task>-predict.jsonl-00000-of-00001 (local or gs://).")
common.define_once(flags.DEFINE_list, "prompts", None,
                   "With --inputs: NAME=SOURCE prompts (runs or prompt files) served together; each row names its "
                   "prompt in 'task' or 'prompt' (mixed-task inference in shared batches).")


def _decode_rows(run, rows, eval_cfg, vocab):
  import jax
  from xprompt_jax.models import decoding
  from xprompt_jax.jsonl_io import bucket_length
  inject = run.inject_fn()
  length = eval_cfg.lengths()["inputs"]

  @jax.jit
  def decode(trainable, aux, tokens):
    injection = inject(trainable, {"encoder_input_tokens": tokens}, aux)
    if eval_cfg.beam_size == 1:
      return decoding.greedy_decode(run.model, run.frozen, tokens, max_decode_len=eval_cfg.decode_length(),
                                    injection=injection)
    beams, _ = decoding.beam_search(run.model, run.frozen, tokens, beam_size=eval_cfg.beam_size,
                                    max_decode_len=eval_cfg.decode_length(), alpha=eval_cfg.decode_alpha,
                                    injection=injection)
    return beams[:, 0]

  encoded = [list(vocab.encode(r["inputs"])) for r in rows]
  cut = [n for n, ids in enumerate(encoded, 1) if len(ids) > length - 1]
  if cut:  # Said, not silent: the rows the model saw only the start of.
    print(f"infer: {len(cut)} of {len(rows)} rows are longer than EvalConfig inputs length {length} tokens and were "
          f"truncated (rows {cut[:5]}{' ...' if len(cut) > 5 else ''}); bind --gin.EvalConfig.inputs_length=N to see "
          "more of them")
  ids = [ids[:length - 1] + [1] for ids in encoded]
  out = []
  bs = eval_cfg.batch_size
  for start in range(0, len(ids), bs):
    chunk = ids[start:start + bs]
    tokens = np.zeros((bs, bucket_length(max(map(len, chunk)))), np.int32)
    for i, seq in enumerate(chunk):
      tokens[i, :len(seq)] = seq
    preds = np.asarray(decode(run.state["trainable"], run.state["aux"], tokens))[:len(chunk)]
    out.extend(vocab.decode(p.tolist()) for p in preds)
  return out


def _mixed_task_infer():
  """Rows naming different prompts, served in shared batches (each example picks its own prompt)."""
  from xprompt_jax import jsonl_io
  from xprompt_jax.evaluation import evaluator as eval_lib
  from xprompt_jax.evaluation import mixed
  from xprompt_jax.tasks import vocab as vocab_lib
  from xprompt_jax.training import data as data_lib
  from xprompt_jax.training import loop
  f = flags.FLAGS
  if not f.inputs:
    raise ValueError("--prompts needs --inputs (a jsonl whose rows name their prompt in 'task' or 'prompt')")
  eval_cfg = loop.eval_lib_defaults(eval_lib.EvalConfig(), data_lib.DataConfig())
  rows = jsonl_io.read_rows(f.inputs, fields=("inputs",))
  server = mixed.server_from_sources(f.prompts, eval_cfg, vocab_lib.get_default_vocabulary(), f.step)
  preds, stats = server.predict(rows, f.inputs)
  jsonl_io.write_jsonl_atomic(f.output, [{**r, "prediction": p} for r, p in zip(rows, preds)])
  print(f"wrote {len(rows)} predictions ({len(server.names)} prompts, {stats['batches']} shared batches) "
        f"to {f.output} [{stats['examples_per_s']:.1f} examples/s]")


T5X_SHARD = "-predict.jsonl-00000-of-00001"  # One shard, as t5x/infer.py names it with num_shards=1.


def t5x_lines(records, examples=None) -> list[dict]:
  """T5X infer's lines ({"input": pretokenized features, "prediction": decoded text}) of `records` (a task's
  `TaskEvaluator.predict` records with its `examples`, or --inputs rows with their "prediction")."""
  def text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
  out = []
  for i, r in enumerate(records):
    if examples is None:
      line = {"input": {"inputs_pretokenized": r["inputs"]}, "prediction": r["prediction"]}
    else:
      pretokenized = {k: text(v) for k, v in examples[i].items() if k.endswith("_pretokenized")}
      line = {"input": pretokenized or {"inputs_pretokenized": r["inputs"], "targets_pretokenized": r["targets"]},
              "prediction": r["decode_prediction"]}
    out.append(line)
  return out


def _write_t5x(folder: str, name: str, lines) -> str:
  import json
  from xprompt_jax.checkpoints import storage
  if not storage.is_gcs(folder):
    import os
    os.makedirs(folder, exist_ok=True)
  path = storage.join(folder, name + T5X_SHARD)
  storage.write_bytes(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8"))
  return path


def main(argv):
  common.init_run(argv)
  f = flags.FLAGS
  if bool(f.output) == bool(f.output_dir):
    raise ValueError("give exactly one of --output (a jsonl) and --output_dir (T5X infer's layout)")
  from xprompt_jax import jsonl_io
  if f.output:
    jsonl_io.check_output(f.output)  # Before loading or predicting anything.
  if f.prompts:
    if f.output_dir:
      raise ValueError("--prompts writes one --output jsonl (rows of several prompts), not T5X's per-task layout")
    return _mixed_task_infer()
  from xprompt_jax import jsonl_io
  from xprompt_jax.evaluation import evaluator as eval_lib
  from xprompt_jax.training import data as data_lib
  from xprompt_jax.training import loop
  from xprompt_jax.training import restore
  from xprompt_jax.tasks import vocab as vocab_lib
  run = restore.load_run(flags.FLAGS.model_dir, flags.FLAGS.step)
  # --task names the task where the config binds none (an MPT or XPrompt pipeline stage sets it per stage).
  data_cfg = data_lib.DataConfig(**({"mixture_or_task_name": f.task} if f.task else {}))
  eval_cfg = loop.eval_lib_defaults(eval_lib.EvalConfig(), data_cfg)
  start = time.time()
  if flags.FLAGS.inputs:
    rows = jsonl_io.read_rows(flags.FLAGS.inputs, fields=("inputs",))
    preds = _decode_rows(run, rows, eval_cfg, vocab_lib.get_default_vocabulary())
    records = [{**r, "prediction": p} for r, p in zip(rows, preds)]
    name, lines = (os.path.splitext(os.path.basename(f.inputs))[0], t5x_lines(records)) if f.output_dir else ("", [])
  else:
    evaluator = eval_lib.make_evaluator(flags.FLAGS.task or data_cfg.mixture_or_task_name, run.model, run.config,
                                        eval_cfg)
    if not hasattr(evaluator, "predict") or not hasattr(evaluator, "task"):
      raise ValueError("--task must name a single task (not a mixture) for infer")
    if f.output_dir and "decode" not in evaluator.modes:
      raise ValueError(f"--output_dir writes T5X's decoded predictions, but {evaluator.task.name} is evaluated by "
                       f"{'/'.join(evaluator.modes)} (EvalConfig.mode={eval_cfg.mode!r}): bind "
                       "--gin.EvalConfig.mode=\"'decode'\" (or 'both'), or use --output")
    records = evaluator.predict(run.frozen, run.state["trainable"], run.inject_fn(), run.state["aux"])
    name = evaluator.task.name
    lines = t5x_lines(records, evaluator.data.examples) if f.output_dir else []
  if f.output_dir:
    written = _write_t5x(f.output_dir, name, lines)
  else:
    jsonl_io.write_jsonl_atomic(flags.FLAGS.output, records)
    written = flags.FLAGS.output
  elapsed = time.time() - start
  print(f"wrote {len(records)} predictions (step {run.step}) to {written} "
        f"[{len(records) / max(elapsed, 1e-9):.1f} examples/s]")
