"""Golden one-step tests of `make_train_step` for every method, against an independent re-implementation.

For each method the loss of ONE Adafactor step equals a float32 jnp cross entropy + z-loss on the logits of a direct
`T5.apply` with a hand-built `Injection` (the method's `inject` is not used for the reference), and the updated
trainable values equal the float64 numpy Adafactor of `tests/numpy_adafactor.py` applied to `jax.grad` of that
independent loss. A few values are also pinned as literal numbers so that a silent numeric change is caught.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numerics
import numpy_adafactor as ref
from xprompt_jax.methods import MPT, PrefixTuning, PromptTuning, XPrompt, XPromptMasks
from xprompt_jax.methods.xprompt import MASKS_KEY
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection
from xprompt_jax.training import optim
from xprompt_jax.training import step as step_lib

Z_LOSS = 1e-4
SMALL = T5Config(vocab_size=64, emb_dim=32, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=2,
                 num_decoder_layers=2, name="golden_small")
# emb_dim 128 so that a [128, 128] prompt has a factored second moment (both dims >= min_dim_size_to_factor).
WIDE = T5Config(vocab_size=64, emb_dim=128, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=2,
                num_decoder_layers=2, name="golden_wide")


@pytest.fixture(scope="module")
def frozen():
  return {cfg.name: t5.init_params(cfg, jax.random.PRNGKey(7)) for cfg in (SMALL, WIDE)}


def _batch(batch_size=4, inputs=8, targets=5, seed=0):
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, 64, size=(batch_size, inputs)).astype(np.int32)
  enc[1, 5:] = 0  # Padding.
  tgt = rng.integers(2, 64, size=(batch_size, targets)).astype(np.int32)
  tgt[:, -1] = 1  # EOS.
  tgt[2, 3:] = 0  # A shorter target.
  dec = np.concatenate([np.zeros((batch_size, 1), np.int32), tgt[:, :-1]], axis=1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "decoder_target_tokens": tgt,
          "decoder_loss_weights": (tgt > 0).astype(np.float32)}


def reference_loss(logits, batch):
  """Mean over real target tokens of `lse - logit[target] + Z_LOSS * lse**2`, written out by hand."""
  logits = logits.astype(jnp.float32)
  peak = jnp.max(logits, axis=-1, keepdims=True)
  lse = jnp.log(jnp.sum(jnp.exp(logits - peak), axis=-1)) + peak[..., 0]
  onehot = jax.nn.one_hot(batch["decoder_target_tokens"], logits.shape[-1], dtype=jnp.float32)
  target_logit = jnp.sum(logits * onehot, axis=-1)
  w = jnp.asarray(batch["decoder_loss_weights"])
  per_token = (lse - target_logit + Z_LOSS * lse**2) * w
  return jnp.sum(per_token) / jnp.sum(w)


# Hand-built injections: each written from the method's definition, not through `method.inject`.


def prompt_injection(trainable, batch):
  del batch
  return Injection(prompt=trainable["prompt"])


def prefix_injection(trainable, batch, reparam):
  del batch
  if reparam:
    mlp = trainable["mlp"]
    hidden = jnp.tanh(jnp.dot(trainable["embedding"], mlp["wi"]["kernel"]) + mlp["wi"]["bias"])  # [L, H]

    def head(part):  # [H, layers, heads, hd] -> [layers, 1, L, heads, hd]
      out = jnp.tensordot(hidden, part["kernel"], axes=1) + part["bias"][None]  # [L, layers, heads, hd]
      return jnp.transpose(out, (1, 0, 2, 3))[:, None]

    kv = {kind: (head(mlp[kind]["key"]), head(mlp[kind]["value"])) for kind in ("encoder", "decoder", "cross")}
  else:
    kv = {kind: (trainable[kind]["key"][:, None], trainable[kind]["value"][:, None])
          for kind in ("encoder", "decoder", "cross")}
  return Injection(encoder_prefix=kv["encoder"], decoder_prefix=kv["decoder"], cross_prefix=kv["cross"])


def mpt_injection(trainable, batch):
  ids = np.asarray(batch["task_id"])
  u, v = trainable["u"][ids], trainable["v"][ids]  # [B, L, r], [B, D, r]
  low_rank = jnp.sum(u[:, :, None, :] * v[:, None, :, :], axis=-1)  # [B, L, D]
  return Injection(prompt=trainable["shared_prompt"][None] * low_rank)


def xprompt_injection(trainable, batch):
  masks = batch[MASKS_KEY]
  prompt = trainable["prompt"]
  width = prompt.shape[1] // masks.piece.shape[1]
  column_mask = jnp.repeat(masks.token[:, None] * masks.piece, width, axis=1)  # [L, D]
  return Injection(prompt=prompt * column_mask)


def _xprompt_masks(length, pieces):
  token = np.ones(length, np.float32)
  token[[1, 4]] = 0.0
  piece = np.ones((length, pieces), np.float32)
  piece[0, 1] = piece[2, 3] = piece[5, 0] = 0.0
  return XPromptMasks(token=jnp.asarray(token), piece=jnp.asarray(piece))


def _case(name):
  """(config, method, injection fn, aux, extra batch features, OptimizerConfig)."""
  default = optim.OptimizerConfig()
  if name == "prompt_factored":
    return WIDE, PromptTuning(length=128, prompt_init="random_uniform"), \
        prompt_injection, None, {}, default
  if name == "prompt":
    return SMALL, PromptTuning(length=6, prompt_init="random_uniform"), prompt_injection, None, {}, default
  if name == "prefix_plain":
    return SMALL, PrefixTuning(length=3, reparam=False, init_std=0.5), \
        lambda tr, b: prefix_injection(tr, b, False), None, {}, default
  if name == "prefix_reparam":
    # hidden_dim and reparam_embed_dim 128: the MLP's input kernel [128, 128] is factored.
    return SMALL, PrefixTuning(length=3, reparam=True, hidden_dim=128, reparam_embed_dim=128), \
        lambda tr, b: prefix_injection(tr, b, True), None, {}, default
  if name == "mpt":
    method = MPT(length=5, prompt_init="random_uniform", num_tasks=3, rank=2, uv_init="normal")
    cfg = optim.OptimizerConfig(label_learning_rates=(("shared", 0.3), ("task", 0.05)))
    return SMALL, method, mpt_injection, None, {"task_id": np.array([2, 0, 2, 1], np.int32)}, cfg
  if name == "xprompt":
    method = XPrompt(length=6, prompt_init="random_uniform", pieces=4)
    return SMALL, method, xprompt_injection, {MASKS_KEY: _xprompt_masks(6, 4)}, {}, default
  raise ValueError(name)


def _optimizer(method, opt_cfg, trainable):
  if opt_cfg.label_learning_rates is None:
    return optim.make_optimizer(opt_cfg)
  return optim.make_optimizer(opt_cfg, method.param_labels(trainable), dict(opt_cfg.label_learning_rates))


def _reference_update(method, opt_cfg, trainable, grads):
  """The float64 numpy Adafactor step (per label with its own learning rate when the method labels its leaves)."""
  host = jax.tree.map(lambda x: np.asarray(x, np.float64), trainable)
  grads = jax.tree.map(lambda x: np.asarray(x, np.float64), grads)
  if opt_cfg.label_learning_rates is None:
    hp = ref.hparams_from_config(opt_cfg)
    return ref.update(grads, ref.init(host, hp), host, hp)[0]
  labels = method.param_labels(trainable)
  out = {}
  for label, lr in opt_cfg.label_learning_rates:
    keys = [k for k in host if labels[k] == label]
    hp = ref.hparams_from_config(opt_cfg, learning_rate=lr)
    sub = {k: host[k] for k in keys}
    out.update(ref.update({k: grads[k] for k in keys}, ref.init(sub, hp), sub, hp)[0])
  return out


_RESULTS = {}


def _one_step(frozen, name):
  """One step of the real `train_step` and of the independent reference (memoised per case: compiles once)."""
  if name not in _RESULTS:
    _RESULTS[name] = _compute_one_step(frozen, name)
  return _RESULTS[name]


def _compute_one_step(frozen, name):
  config, method, injection_fn, aux, extra, opt_cfg = _case(name)
  params = frozen[config.name]
  batch = {**_batch(), **extra}
  trainable0 = method.init(jax.random.PRNGKey(3), params, config)
  optimizer = _optimizer(method, opt_cfg, trainable0)
  state = step_lib.init_state(method, params, config, optimizer, jax.random.PRNGKey(3), aux)
  trainable0 = jax.tree.map(np.asarray, state["trainable"])
  train_step = jax.jit(step_lib.make_train_step(t5.T5(config), method, config, optimizer,
                                                step_lib.LossConfig(z_loss=Z_LOSS)))
  new_state, metrics = train_step(state, batch, params)

  model = t5.T5(config)
  ref_batch = {**batch, **(aux or {})}

  def independent_loss(trainable):
    logits = model.apply({"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                         injection=injection_fn(trainable, ref_batch))
    return reference_loss(logits, batch)

  loss, grads = jax.jit(jax.value_and_grad(independent_loss))(jax.tree.map(jnp.asarray, trainable0))
  expected = _reference_update(method, opt_cfg, trainable0, grads)
  return {"method": method, "metrics": metrics, "state": new_state, "aux": aux, "loss": loss, "grads": grads,
          "expected": expected, "trainable0": trainable0}


CASES = ("prompt", "prompt_factored", "prefix_plain", "prefix_reparam", "mpt", "xprompt")

# Computed once with this test (float32 on CPU) and checked in: loss, grad norm, and the first three updated
# values of the first trainable leaf (in jax.tree.leaves order).
GOLDEN = {
    "prompt": (4.349462509155273, 0.5743770003318787, [-0.7912997007369995, -0.15600699186325073, 0.1115749180316925]),
    "prompt_factored": (4.691440582275391, 1.1747105121612549,
                        [0.16545480489730835, -0.12753087282180786, -0.3623845875263214]),
    "prefix_plain": (4.750795841217041, 0.2922222912311554,
                     [0.20049983263015747, 0.10394898056983948, -0.3315473198890686]),
    "prefix_reparam": (4.730424880981445, 2.1682138442993164,
                       [0.096652090549469, -0.5649428367614746, -1.0206202268600464]),
    "mpt": (4.426645755767822, 1.4431202411651611, [-0.019256591796875, 0.31431034207344055, 0.19266727566719055]),
    "xprompt": (4.48081111907959, 0.6798477172851562,
                [-0.7912997007369995, -0.15600699186325073, -0.4884251058101654]),
}


@pytest.mark.parametrize("name", CASES)
def test_one_step_matches_independent_reference(frozen, name):
  r = _one_step(frozen, name)
  metrics, state = r["metrics"], r["state"]
  # Two compilations of one forward (and backward) pass: the network's roundings on the loss and on the gradients.
  numerics.assert_close(metrics["loss"], r["loss"])
  grad_norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in jax.tree.leaves(r["grads"])))
  numerics.assert_close(metrics["grad_norm"], grad_norm)
  assert grad_norm > 0
  assert bool(metrics["finite"]) and int(state["step"]) == 1
  flat_new = jax.tree_util.tree_flatten_with_path(state["trainable"])[0]
  flat_expected = dict(jax.tree_util.tree_flatten_with_path(r["expected"])[0])
  assert len(flat_new) == len(flat_expected)
  for path, value in flat_new:
    # Updates are ~lr = 0.3 in size; the two float32 gradients differ by the backward pass's rounding, which the
    # factored second moment (unlike the sign-like first unfactored step) passes on through one elementwise update.
    numerics.assert_close(value, flat_expected[path], err_msg=f"{name}: {jax.tree_util.keystr(path)}")
  # The update really moved every leaf (a step that changes nothing would also "match" a zero reference update).
  for (path, new), old in zip(flat_new, jax.tree.leaves(r["trainable0"])):
    numerics.assert_differs(new, old, err_msg=f"{name}: {jax.tree_util.keystr(path)} did not move")
  if r["aux"] is not None:
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), state["aux"], r["aux"])


@pytest.mark.parametrize("name", CASES)
def test_one_step_golden_values(frozen, name):
  r = _one_step(frozen, name)
  loss, grad_norm, head = GOLDEN[name]
  first = np.asarray(jax.tree.leaves(r["state"]["trainable"])[0]).ravel()[:3]
  # The same step on another machine: forward and backward passes in another order, and one update of the latter.
  numerics.assert_close(r["metrics"]["loss"], loss)
  numerics.assert_close(r["metrics"]["grad_norm"], grad_norm)
  numerics.assert_close(first, head)


def test_factored_case_really_factors(frozen):
  """The wide prompt's and the prefix MLP input kernel's second moments are factored (row/column statistics)."""
  for name, leaf_shape in (("prompt_factored", (128, 128)), ("prefix_reparam", (128, 128))):
    config, method, _, aux, _, opt_cfg = _case(name)
    trainable = method.init(jax.random.PRNGKey(3), frozen[config.name], config)
    state = step_lib.init_state(method, frozen[config.name], config, _optimizer(method, opt_cfg, trainable),
                                jax.random.PRNGKey(3), aux)
    factored = [x for x in jax.tree.leaves(state["opt_state"]) if np.shape(x) == (leaf_shape[0],)]
    assert factored, f"{name}: no [128] row/column statistic in the optimizer state"
    assert ref.factored_dims(leaf_shape, ref.hparams_from_config(opt_cfg)) is not None


def test_xprompt_masked_entries_only_decay(frozen):
  """Masked-out prompt entries get no gradient, so one step changes them only by the (not lr-scaled) weight decay."""
  r = _one_step(frozen, "xprompt")
  masks = r["aux"][MASKS_KEY]
  keep = np.repeat(np.asarray(masks.token)[:, None] * np.asarray(masks.piece), 32 // 4, axis=1) > 0
  grad = np.asarray(r["grads"]["prompt"])
  assert np.all(grad[~keep] == 0) and np.all(grad[keep] != 0)
  old, new = r["trainable0"]["prompt"], np.asarray(r["state"]["trainable"]["prompt"])
  # p - 0 - wd p against float64 (1 - wd) p: a couple of roundings, far below the decay itself (1e-5 of p = 168 u).
  numerics.assert_close(new[~keep], old[~keep] * (1 - optim.OptimizerConfig().weight_decay_rate),
                        roundings=numerics.FEW)
  assert np.all(np.abs(new[keep] - old[keep]) > 0.1)  # The others move by about lr = 0.3.
