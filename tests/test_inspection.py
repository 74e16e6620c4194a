"""Prompt inspection: nearest tokens recover the tokens a prompt was initialised from; similarity matrices."""
import jax
import numpy as np
import pytest

import numerics
from xprompt_jax.evaluation import inspection
from xprompt_jax.methods.prompt import initial_prompt
from xprompt_jax.tasks import vocab as vocab_lib


def test_nearest_tokens_of_a_prompt_from_known_tokens():
  embedding = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2000, 16)))
  ids = [37, 1704, 4, 99, 250]
  prompt = np.asarray(initial_prompt(jax.random.PRNGKey(1), embedding, len(ids), "from_text", text=ids))
  hits = inspection.nearest_tokens(prompt, embedding, k=3)
  assert [row[0][0] for row in hits] == ids
  assert all(row[0][1] == pytest.approx(1.0) and row[1][1] < 1.0 for row in hits)
  # Cosine, not dot product: scaling a row keeps its neighbour; num_ids restricts the search.
  assert inspection.nearest_tokens(7.0 * prompt[:1], embedding, k=1)[0][0][0] == ids[0]
  assert all(i < 100 for row in inspection.nearest_tokens(prompt, embedding, k=2, num_ids=100) for i, _ in row)


def test_format_nearest_shows_sentencepiece_pieces():
  vocab = vocab_lib.get_default_vocabulary()
  text = inspection.format_nearest([[(37, 0.9), (1704, 0.5)]], vocab, title="prompt rte")
  assert text.splitlines() == ["prompt rte", "    0: '▁The' 0.900, '▁quick' 0.500"]


def test_prompt_similarity_and_table():
  a = np.array([[1.0, 0.0], [1.0, 0.0]])
  b = np.array([[0.0, 2.0], [0.0, 2.0]])
  c = np.array([[3.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
  names, sim = inspection.prompt_similarity({"a": a, "b": b, "c": c})
  # Host float64 cosines of 2-entry vectors: a few roundings each, on the unit scale of a cosine.
  numerics.assert_close(sim, [[1, 0, 1], [0, 1, 0], [1, 0, 1]], roundings=numerics.FEW, dtype=np.float64)
  _, flat = inspection.prompt_similarity({"a": a, "b": -a}, "flat")
  numerics.assert_close(flat, [[1, -1], [-1, 1]], roundings=numerics.FEW, dtype=np.float64)
  table = inspection.format_similarity(names, sim)
  assert table.splitlines()[1].split() == ["a", "1.000", "0.000", "1.000"]
  with pytest.raises(ValueError, match="'flat' similarity needs prompts of one shape"):
    inspection.prompt_similarity({"a": a, "c": c}, "flat")
  with pytest.raises(ValueError, match=r"do not match \(\[L, D\] and \[vocab, D\]\)"):
    inspection.nearest_tokens(a, np.zeros((10, 3)))
