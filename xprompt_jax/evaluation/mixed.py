"""Mixed-task serving: one frozen T5, many prompts, rows of different tasks decoded together in shared batches.

    server = MixedPromptServer(model, frozen, {"rte": prompt_rte, "cb": prompt_cb}, vocab, inputs_length=128,
                               max_decode_len=8, batch_size=32)
    predictions, stats = server.predict(rows)      # rows: {"task": "rte", "inputs": "..."} (or "prompt": ...)

Rows are taken in file order in batches of `batch_size` whatever their task; each row picks its own prompt from
the stacked prompt table inside the compiled function (`Injection.prompt` of shape [B, L, D]), so a batch mixes
tasks freely and one compiled function serves every mix. Prompts of different lengths cannot share a batch (a
prompt has no padding mask): rows are grouped by prompt length and each group is batched in file order; outputs
come back in the input order. Inputs are padded to the fixed `inputs_length`. `stats` reports examples, batches,
seconds and examples per second.
"""
import time
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xprompt_jax.models import decoding
from xprompt_jax.models.injection import Injection

ROW_KEYS = ("task", "prompt")


def row_prompt_names(rows: Sequence[Mapping[str, Any]], known: Sequence[str], source: str = "rows") -> list[str]:
  """Each row's prompt name (its "prompt" field, else "task"); errors name the line and the known prompts."""
  names, problems = [], []
  for i, row in enumerate(rows, 1):
    name = row.get("prompt", row.get("task"))
    if not isinstance(name, str):
      problems.append(f"{source}:{i}: the row names no prompt (a string field 'prompt' or 'task')")
    elif name not in known:
      problems.append(f"{source}:{i}: prompt {name!r} is not loaded; loaded prompts: {', '.join(known)}")
    if not isinstance(row.get("inputs"), str):
      problems.append(f"{source}:{i}: field 'inputs' must be a string")
    names.append(name)
  if problems:
    more = f"\n... and {len(problems) - 10} more" if len(problems) > 10 else ""
    raise ValueError("\n".join(problems[:10]) + more)
  return names


class MixedPromptServer:
  """Greedy (or beam) decoding of rows that each name their prompt, in shared batches."""

  def __init__(self, model, frozen, prompts: Mapping[str, Any], vocabulary, *, inputs_length: int,
               max_decode_len: int, batch_size: int = 32, beam_size: int = 1, alpha: float = 0.6):
    if not prompts:
      raise ValueError("mixed serving needs at least one named prompt")
    self.model, self.frozen, self.vocabulary = model, frozen, vocabulary
    self.names = list(prompts)
    arrays = {name: np.asarray(p, np.float32) for name, p in prompts.items()}
    widths = {a.shape[-1] for a in arrays.values()}
    bad = [f"{n} {a.shape}" for n, a in arrays.items() if a.ndim != 2]
    if bad or len(widths) != 1:
      shapes = ", ".join(f"{n} {a.shape}" for n, a in arrays.items())
      raise ValueError(f"prompts must be [L, D] of one width D; got {shapes}")
    self.tables = {}  # prompt length -> (names, [P, L, D])
    for length in sorted({a.shape[0] for a in arrays.values()}):
      group = [n for n in self.names if arrays[n].shape[0] == length]
      self.tables[length] = (group, jnp.asarray(np.stack([arrays[n] for n in group])))
    self.length_of = {n: arrays[n].shape[0] for n in self.names}
    self.inputs_length, self.max_decode_len, self.batch_size = inputs_length, max_decode_len, batch_size
    self.beam_size, self.alpha = beam_size, alpha
    self._decode = jax.jit(self._decode_batch)

  def _decode_batch(self, frozen, table, index, tokens):
    injection = Injection(prompt=jnp.take(table, index, axis=0))
    if self.beam_size == 1:
      return decoding.greedy_decode(self.model, frozen, tokens, max_decode_len=self.max_decode_len,
                                    injection=injection)
    return decoding.beam_search(self.model, frozen, tokens, beam_size=self.beam_size,
                                max_decode_len=self.max_decode_len, alpha=self.alpha, injection=injection)[0][:, 0]

  def _tokens(self, texts: Sequence[str]) -> np.ndarray:
    out = np.zeros((self.batch_size, self.inputs_length), np.int32)
    for i, text in enumerate(texts):
      ids = list(self.vocabulary.encode(text))[:self.inputs_length - 1] + [1]
      out[i, :len(ids)] = ids
    return out

  def predict(self, rows: Sequence[Mapping[str, Any]], source: str = "rows") -> tuple[list[str], dict[str, float]]:
    """(one prediction per row in input order, throughput stats)."""
    names = row_prompt_names(rows, self.names, source)
    out: list[Optional[str]] = [None] * len(rows)
    start, batches = time.perf_counter(), 0
    for length, (group, table) in self.tables.items():
      position = {n: i for i, n in enumerate(group)}
      members = [i for i, n in enumerate(names) if self.length_of[n] == length]
      for at in range(0, len(members), self.batch_size):
        chunk = members[at:at + self.batch_size]
        index = np.zeros((self.batch_size,), np.int32)
        index[:len(chunk)] = [position[names[i]] for i in chunk]
        tokens = self._tokens([rows[i]["inputs"] for i in chunk])
        decoded = np.asarray(self._decode(self.frozen, table, index, tokens))
        for i, t in zip(chunk, decoded):
          out[i] = self.vocabulary.decode(t.tolist())
        batches += 1
    seconds = time.perf_counter() - start
    stats = {"examples": len(rows), "batches": batches, "seconds": seconds,
             "examples_per_s": len(rows) / max(seconds, 1e-9)}
    return out, stats


def server_from_sources(specs: Sequence[str], eval_cfg, vocabulary, step: str = "latest") -> "MixedPromptServer":
  """A server for `NAME=SOURCE` prompt specs (runs, PEFT prompt adapters, prompt-tuning files) on the gin-bound
  frozen model, decoding as `eval_cfg` says (inputs length, decode length, batch and beam size).

  For `xprompt-jax infer --inputs=rows.jsonl --prompts=rte=/runs/rte,cb=/runs/cb`.
  """
  from xprompt_jax.evaluation import ensemble
  from xprompt_jax.interop import run_prompts
  from xprompt_jax.models import t5
  from xprompt_jax.models.config import T5Config
  from xprompt_jax.training import loop
  from xprompt_jax.training import partitioning
  config, mesh_cfg = T5Config(), partitioning.MeshConfig()
  loaded = {name: run_prompts.load_prompt(src, step) for name, src in run_prompts.parse_named_sources(specs).items()}
  frozen, frozen_ref = loop.load_frozen(loop.TrainConfig(), config, partitioning.make_mesh(mesh_cfg), mesh_cfg.rules)
  ensemble.check_same_base({"gin-configured frozen model": frozen_ref,
                            **{name: ref for name, (_, ref) in loaded.items() if ref is not None}})
  return MixedPromptServer(t5.T5(config), frozen, {name: p for name, (p, _) in loaded.items()}, vocabulary,
                           inputs_length=eval_cfg.lengths()["inputs"], max_decode_len=eval_cfg.decode_length(),
                           batch_size=eval_cfg.batch_size, beam_size=eval_cfg.beam_size, alpha=eval_cfg.decode_alpha)
