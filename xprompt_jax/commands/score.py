"""`xprompt-jax score`: log p(targets | inputs) of each row of a jsonl file under a frozen T5, or a trained run.

    xprompt-jax score --checkpoint=../shared/golden/t5_1_1_mini --inputs=pairs.jsonl --output=scores.jsonl
    xprompt-jax score --gin_file=runs/smoke_cpu.gin --model_dir=/tmp/xprompt_smoke --inputs=pairs.jsonl \
      --output=scores.jsonl      # the run's prompt / prefix / XPrompt masks applied (MPT: a "task_id" per row)

Each input line is `{"inputs": str, "targets": str, ...}`; each output line is that row plus `"score"`, the sum
over target tokens (targets + EOS) of log p(token | inputs) under teacher forcing (T5X's `score` convention).
T5X and Orbax checkpoints take the architecture from `--gin_file=models/<name>.gin`; HF checkpoints carry it.
Rows are sorted by length into buckets so few shapes compile; malformed rows are reported with their line number
and nothing is written unless every row was scored (the output appears atomically).
"""
import os

from absl import flags
from absl import logging
import numpy as np

from xprompt_jax import jsonl_io
from xprompt_jax.commands import common

common.define_gin_flags()
common.define_run_flags()
common.define_once(flags.DEFINE_string, "checkpoint", None, "HF, T5X or Orbax checkpoint directory (local or gs://).")
common.define_once(flags.DEFINE_string, "step", "latest", "With --model_dir: the checkpoint, latest, best or a step.")
common.define_once(flags.DEFINE_string, "vocab", None,
                   "SentencePiece model; default: the standard T5 vocab + 100 extra ids.")
common.define_once(flags.DEFINE_string, "inputs", None, "jsonl with {\"inputs\": str, \"targets\": str} per line.")
common.define_once(flags.DEFINE_string, "output", None, "jsonl to write: each input row plus \"score\".")
common.define_once(flags.DEFINE_integer, "batch_size", 16, "Rows per jitted forward pass.")
common.define_once(flags.DEFINE_integer, "max_input_length", None,
                   "Truncate inputs (before EOS) to this many tokens. Unset, a row longer than "
                   "4096 tokens is an error (its attention would not fit memory).")
common.define_once(flags.DEFINE_integer, "max_target_length", None,
                   "Truncate targets (before EOS) to this many tokens.")


UNBOUNDED_LIMIT = 4096  # Tokens per input or target without --max_*_length: beyond, a row is refused.


def tokenize(rows, vocab, max_input_length=None, max_target_length=None):
  """Lists of input and target ids (EOS = 1 appended, as seqio's append_eos). Without a `max_*_length`, a row
  longer than `UNBOUNDED_LIMIT` tokens raises naming the row (one 200k-word row asked for hundreds of GiB)."""
  ins, tgts = [], []
  for number, row in enumerate(rows, 1):
    i, t = list(vocab.encode(row["inputs"])), list(vocab.encode(row["targets"]))
    for field, ids, limit in (("inputs", i, max_input_length), ("targets", t, max_target_length)):
      if not limit and len(ids) > UNBOUNDED_LIMIT:
        raise ValueError(f"row {number}: {field} has {len(ids)} tokens, more than {UNBOUNDED_LIMIT}: pass "
                         f"--max_{field[:-1]}_length=N to truncate (e.g. 512)")
    ins.append((i[:max_input_length] if max_input_length else i) + [1])
    tgts.append((t[:max_target_length] if max_target_length else t) + [1])
  return ins, tgts


def score_token_ids(model, params, inputs, targets, batch_size: int, progress=True, run=None,
                    task_ids=None) -> np.ndarray:
  """Scores for id lists, batched by similar length; returns float64 scores in the original order. `run`
  (`training.restore.Run`) applies its trained parameters; `task_ids` gives MPT's task of each row."""
  from tqdm import tqdm
  from xprompt_jax.evaluation import scoring
  score_fn = scoring.make_score_fn(model)
  inject = run.inject_fn() if run is not None else None
  order = sorted(range(len(inputs)), key=lambda i: (len(inputs[i]), len(targets[i])))
  out = np.zeros(len(inputs), np.float64)
  bar = tqdm(total=len(inputs), desc="score", unit="row", disable=not progress)
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    li = jsonl_io.bucket_length(max(len(inputs[i]) for i in idx))
    lt = jsonl_io.bucket_length(max(len(targets[i]) for i in idx))
    enc = np.zeros((batch_size, li), np.int32)
    tgt = np.zeros((batch_size, lt), np.int32)
    for row, i in enumerate(idx):
      enc[row, :len(inputs[i])] = inputs[i]
      tgt[row, :len(targets[i])] = targets[i]
    batch = {"encoder_input_tokens": enc, "decoder_target_tokens": tgt}
    if task_ids is not None:
      batch["task_id"] = np.asarray([task_ids[i] for i in idx] + [task_ids[idx[0]]] * (batch_size - len(idx)),
                                    np.int32)
    injection = None if run is None else inject(run.state["trainable"], batch, run.state["aux"])
    scores = np.asarray(score_fn(params, batch, injection))
    out[idx] = scores[:len(idx)]
    bar.update(len(idx))
  bar.close()
  return out


def load_model(checkpoint: str):
  """(T5 model, params, config) from a checkpoint; gin-bound T5Config for T5X (and to override HF/Orbax)."""
  from xprompt_jax import checkpoints
  from xprompt_jax.models.config import T5Config
  from xprompt_jax.models.t5 import T5
  config = T5Config() if flags.FLAGS.gin_file or flags.FLAGS.gin_bindings else None
  params, config = checkpoints.load_params(checkpoint, config)
  return T5(config), params, config


def load_vocab(path):
  import seqio
  from xprompt_jax.tasks import vocab as vocab_lib
  if not path:
    return vocab_lib.get_default_vocabulary()
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--vocab={path} does not exist (a SentencePiece .model file)")
  vocab = seqio.SentencePieceVocabulary(path, extra_ids=100)
  try:
    vocab.vocab_size  # Loads the model: a file that is not SentencePiece fails here.
  except Exception as e:  # pylint: disable=broad-except  (sentencepiece raises RuntimeError / OSError variants)
    raise ValueError(f"--vocab={path} is not a SentencePiece model ({type(e).__name__}: {str(e)[:120]})") from e
  return vocab


def check_vocab(vocab, config) -> None:
  if vocab.vocab_size > config.vocab_size:
    raise ValueError(f"vocabulary has {vocab.vocab_size} ids but the model's embedding has only "
                     f"{config.vocab_size} rows (T5Config.vocab_size): checkpoint and vocabulary do not match")


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected positional arguments: {argv[1:]}")
  f = flags.FLAGS
  if bool(f.checkpoint) == bool(f.model_dir):
    raise ValueError("give exactly one of --checkpoint (a frozen T5) and --model_dir (a trained run, scored with "
                     "its prompt, prefix, MPT task or XPrompt masks and the run's --gin_file flags)")
  for name in ("inputs", "output"):
    if not getattr(f, name):
      raise ValueError(f"--{name} is required")
  jsonl_io.check_output(f.output)  # Before any model is loaded or row scored.
  common.parse_gin_from_flags()
  rows = jsonl_io.read_rows(f.inputs)
  vocab = load_vocab(f.vocab)  # Checked before a model is loaded.
  run = None
  if f.model_dir:
    from xprompt_jax.training import restore
    run = restore.load_run(f.model_dir, f.step)
    model, params, config = run.model, run.frozen, run.config
  else:
    model, params, config = load_model(f.checkpoint)
  task_ids = _task_ids(rows, run)
  check_vocab(vocab, config)
  inputs, targets = tokenize(rows, vocab, f.max_input_length, f.max_target_length)
  scores = score_token_ids(model, params, inputs, targets, f.batch_size, run=run, task_ids=task_ids)
  jsonl_io.write_jsonl_atomic(flags.FLAGS.output, ({**row, "score": float(s)} for row, s in zip(rows, scores)))
  logging.info("scored %d rows -> %s", len(rows), flags.FLAGS.output)
  source = f"{config.name}" + (f" + {run.method.name} from {f.model_dir} (step {run.step})" if run else "")
  print(f"scored {len(rows)} rows with {source} -> {flags.FLAGS.output}")


def _task_ids(rows, run):
  """Each row's "task_id" (a multitask method's per-task parameters; the method checks the range), or None."""
  with_id = [i for i, r in enumerate(rows) if "task_id" in r]
  if not with_id:
    return None
  if run is None:
    raise ValueError(f"{flags.FLAGS.inputs}: rows carry a \"task_id\", which only a trained run (--model_dir) uses")
  missing = sorted(set(range(len(rows))) - set(with_id))
  if missing:
    raise ValueError(f"{flags.FLAGS.inputs} line {missing[0] + 1}: no \"task_id\" (other rows have one: give it to "
                     "every row)")
  for i, r in enumerate(rows):
    if not isinstance(r["task_id"], int) or isinstance(r["task_id"], bool) or r["task_id"] < 0:
      raise ValueError(f"{flags.FLAGS.inputs} line {i + 1}: task_id={r['task_id']!r} must be an int >= 0")
  return [r["task_id"] for r in rows]
