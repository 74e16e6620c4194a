"""Prompt inspection: the vocabulary tokens nearest to each prompt vector, and prompt-prompt similarity.

    hits = nearest_tokens(prompt [L, D], embedding [V, D], k=5)     # per row: [(id, cosine), ...] best first
    names, sim = prompt_similarity({"rte": p1, "cb": p2}, "mean")    # [N, N] cosine matrix
    print(format_nearest(hits, vocabulary)); print(format_similarity(names, sim))

Cosine similarity throughout (Lester et al. §7.2 read prompts through their nearest neighbours in the frozen
embedding table). Prompt-prompt similarity is the cosine of the mean-pooled prompt vectors ("mean", any lengths;
the task-similarity measure of SPoT, Vu et al. 2022) or of the flattened prompts ("flat", equal lengths only:
position by position).
"""
from typing import Any, Mapping, Optional, Sequence

import numpy as np

SIMILARITIES = ("mean", "flat")


def _unit_rows(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  norm = np.linalg.norm(x, axis=-1, keepdims=True)
  return x / np.where(norm == 0, 1.0, norm)


def nearest_tokens(prompt, embedding, k: int = 5, num_ids: Optional[int] = None) -> list[list[tuple[int, float]]]:
  """For each prompt row, the `k` token ids of highest cosine similarity with their cosines, best first.

  `num_ids` limits the search to ids below it (e.g. the vocabulary's real size, leaving out the padding rows of
  a 32,128-row table); zero rows never match anything (cosine 0).
  """
  prompt, embedding = np.asarray(prompt), np.asarray(embedding)
  if prompt.ndim != 2 or embedding.ndim != 2 or prompt.shape[1] != embedding.shape[1]:
    raise ValueError(f"prompt of shape {prompt.shape} and embedding table of shape {embedding.shape} do not match "
                     "([L, D] and [vocab, D])")
  table = embedding[:num_ids] if num_ids else embedding
  if not 0 < k <= table.shape[0]:
    raise ValueError(f"k={k} must be in 1..{table.shape[0]} (the searched vocabulary size)")
  cos = _unit_rows(prompt) @ _unit_rows(table).T
  top = np.argsort(-cos, axis=1, kind="stable")[:, :k]
  return [[(int(i), float(cos[r, i])) for i in row] for r, row in enumerate(top)]


def prompt_similarity(prompts: Mapping[str, Any], kind: str = "mean") -> tuple[list[str], np.ndarray]:
  """(names, `[N, N]` cosine similarity) of named prompts `[L, D]` (see the module docstring for `kind`)."""
  if kind not in SIMILARITIES:
    raise ValueError(f"similarity kind {kind!r}; known: {', '.join(SIMILARITIES)}")
  names = list(prompts)
  arrays = [np.asarray(prompts[n]) for n in names]
  for n, a in zip(names, arrays):
    if a.ndim != 2 or a.shape[1] != arrays[0].shape[1]:
      raise ValueError(f"prompt {n!r} has shape {a.shape}; all prompts must be [L, D] with D={arrays[0].shape[1]}")
  if kind == "flat":
    bad = [f"{n} {a.shape}" for n, a in zip(names, arrays) if a.shape != arrays[0].shape]
    if bad:
      raise ValueError(f"'flat' similarity needs prompts of one shape {arrays[0].shape}; differing: {bad}; use 'mean'")
    vectors = np.stack([a.reshape(-1) for a in arrays])
  else:
    vectors = np.stack([a.mean(axis=0) for a in arrays])
  unit = _unit_rows(vectors)
  return names, unit @ unit.T


def token_text(vocabulary, token_id: int) -> str:
  """A readable form of one id: the SentencePiece piece when available, else the decoded text."""
  size = getattr(vocabulary, "vocab_size", None)
  if size is not None and token_id >= size:
    return f"<row {token_id}>"  # Padding rows of the embedding table past the vocabulary.
  tokenizer = getattr(vocabulary, "tokenizer", None)
  if tokenizer is not None and token_id < tokenizer.get_piece_size():
    return tokenizer.id_to_piece(token_id)
  return vocabulary.decode([token_id]) or f"<id {token_id}>"


def format_nearest(hits: Sequence[Sequence[tuple[int, float]]], vocabulary=None, title: str = "") -> str:
  """One line per prompt position: `  3: 'piece' 0.91, ...`."""
  lines = [title] if title else []
  for r, row in enumerate(hits):
    cells = [f"{(token_text(vocabulary, i) if vocabulary is not None else i)!r} {c:.3f}" for i, c in row]
    lines.append(f"  {r:>3}: " + ", ".join(cells))
  return "\n".join(lines)


def format_similarity(names: Sequence[str], sim: np.ndarray) -> str:
  """A square table of the similarity matrix with the names as row and column headers."""
  width = max(6, *(len(n) for n in names))
  head = " " * width + "".join(f" {n:>{width}}" for n in names)
  rows = [f"{n:<{width}}" + "".join(f" {v:>{width}.3f}" for v in sim[i]) for i, n in enumerate(names)]
  return "\n".join([head, *rows])
