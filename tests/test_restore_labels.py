"""training/restore.py: a run trained with per-label learning rates that a pipeline set (MPT's target adaptation,
not gin) is read back with the per-label optimizer layout its checkpoint holds."""
import jax
import numpy as np

from xprompt_jax.training import restore


def test_stored_labels_follow_the_checkpoints_multi_transform_layout():
  trainable = {"shared_prompt": np.zeros((4, 2)), "u": np.zeros((1, 4)), "v": np.zeros((1, 2))}
  stored = {"trainable.shared_prompt": (4, 2), "trainable.u": (1, 4), "trainable.v": (1, 2), "step": (),
            "opt_state.inner_states.shared.inner_state.0.v.shared_prompt": (4, 2),
            "opt_state.inner_states.u.inner_state.0.v_row.u": (1,),
            "opt_state.inner_states.v.inner_state.0.v.v": (1, 2)}
  assert restore._stored_labels(stored, trainable) == {"shared_prompt": "shared", "u": "u", "v": "v"}
  plain = {k: v for k, v in stored.items() if not k.startswith("opt_state")}
  plain["opt_state.0.v.u"] = (1, 4)
  assert restore._stored_labels(plain, trainable) is None
  # Nested trees: the dotted path of each leaf.
  nested = {"prefix": {"keys": np.zeros(2)}}
  labels = restore._stored_labels({"trainable.prefix.keys": (2,),
                                   "opt_state.inner_states.kv.inner_state.0.v.prefix.keys": (2,)}, nested)
  assert jax.tree.leaves(labels) == ["kv"]
