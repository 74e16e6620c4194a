"""Issue 9 item 1: one train step of prompt (and prefix) tuning, ours (jitted JAX) vs HF PEFT + torch, same shapes.

Same T5 1.1 configuration and the same random weights in both frameworks (through the HF converter), batch B x
`inputs` encoder tokens, `targets` decoder tokens, prompt length P, fp32 on CPU. Each contender is warmed up
(compiled) once, then both run round-robin `repeats` times; examples/s come from the medians. The first loss of
each framework on the same weights and batch is reported (and must agree: `tests/test_bench_quick.py`).

    python bench/step_vs_peft.py --size small            # the issue's setting (batch 8 x 256, 8 targets, P=100)
    python bench/step_vs_peft.py --quick                 # tiny sizes, seconds
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

import bench_common
import hf_bridge
from xprompt_jax.methods.prefix import PrefixTuning
from xprompt_jax.methods.prompt import PromptTuning
from xprompt_jax.models.config import PRESETS, T5Config
from xprompt_jax.models.t5 import T5, init_params
from xprompt_jax.training.optim import OptimizerConfig, make_optimizer
from xprompt_jax.training.step import LossConfig, init_state, make_train_step

SIZES = {"tiny": T5Config(vocab_size=32128, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64, num_encoder_layers=2,
                          num_decoder_layers=2, name="bench_tiny"),
         "small": PRESETS["t5_1_1_small"], "base": PRESETS["t5_1_1_base"]}
QUICK = dict(size="tiny", batch=2, inputs=16, targets=4, prompt=4, repeats=1)
LOSS = LossConfig(z_loss=0.0)  # HF's loss has no z-loss; both are the mean over real target tokens.


def random_batch(seed: int, batch: int, inputs: int, targets: int, vocab: int) -> dict[str, np.ndarray]:
  """Full-length rows (no padding: same shapes on both sides), EOS-terminated."""
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, vocab, (batch, inputs)).astype(np.int32)
  tgt = rng.integers(2, vocab, (batch, targets)).astype(np.int32)
  enc[:, -1], tgt[:, -1] = 1, 1
  dec_in = np.zeros_like(tgt)
  dec_in[:, 1:] = tgt[:, :-1]
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in, "decoder_target_tokens": tgt,
          "decoder_loss_weights": np.ones_like(tgt)}


class OurStep:
  """A jitted train step with its state; `__call__` runs one step and blocks on the result."""

  def __init__(self, config, frozen, method, batch, seed=0):
    optimizer = make_optimizer(OptimizerConfig())
    self.step = jax.jit(make_train_step(T5(config), method, config, optimizer, LOSS))
    self.state = init_state(method, frozen, config, optimizer, jax.random.PRNGKey(seed))
    self.frozen, self.batch = frozen, {k: jnp.asarray(v) for k, v in batch.items()}
    self.losses = []

  def __call__(self):
    self.state, metrics = self.step(self.state, self.batch, self.frozen)
    self.losses.append(float(jax.block_until_ready(metrics["loss"])))

  def compilations(self) -> int:
    return self.step._cache_size()  # pylint: disable=protected-access


class PeftStep:
  """A PEFT model, torch's Adafactor over its trainable parameters, and one batch."""

  def __init__(self, peft_model, batch):
    import torch
    self.model = peft_model.train()
    self.optimizer = torch.optim.Adafactor([p for p in peft_model.parameters() if p.requires_grad], lr=0.3)
    self.inputs = hf_bridge.torch_batch(batch)
    self.losses = []

  def __call__(self):
    self.losses.append(hf_bridge.torch_train_step(self.model, self.optimizer, self.inputs))


def _compare(name: str, ours: OurStep, theirs, batch_size: int, repeats: int) -> dict:
  ours()  # Compile.
  if theirs is not None:
    theirs()
  contenders = {"ours": ours} if theirs is None else {"ours": ours, "peft": theirs}
  timing = bench_common.interleaved(contenders, repeats)
  out = {"method": name, "compilations": ours.compilations(), "first_loss_ours": ours.losses[0]}
  for who, t in timing.items():
    out[f"{who}_examples_per_s"] = batch_size / t["median_s"]
    out[f"{who}_step_s"] = t["seconds"]
    out["load_avg"] = t["load_avg"]
  if theirs is not None:
    out["first_loss_peft"] = theirs.losses[0]
    out["ratio_ours_over_peft"] = out["ours_examples_per_s"] / out["peft_examples_per_s"]
  return out


def run(size: str = "small", batch: int = 8, inputs: int = 256, targets: int = 8, prompt: int = 100,
        repeats: int = 5, methods=("prompt", "prefix"), seed: int = 0) -> list[dict]:
  import torch
  torch.manual_seed(seed)
  config = SIZES[size]
  frozen = init_params(config, jax.random.PRNGKey(seed))
  data = random_batch(seed, batch, inputs, targets, config.vocab_size)
  results = []
  shape = {"size": size, "batch": batch, "inputs": inputs, "targets": targets, "prompt": prompt, "dtype": "float32",
           "torch_threads": torch.get_num_threads()}
  if "prompt" in methods:
    ours = OurStep(config, frozen, PromptTuning(length=prompt, prompt_init="sampled_vocab"), data, seed)
    theirs = PeftStep(hf_bridge.peft_prompt_model(hf_bridge.hf_model(frozen, config),
                                                  np.asarray(ours.state["trainable"]["prompt"])), data)
    results.append({**shape, **_compare("prompt", ours, theirs, batch, repeats)})
    del theirs
  if "prefix" in methods:
    ours = OurStep(config, frozen, PrefixTuning(length=prompt, hidden_dim=512), data, seed)
    try:
      theirs = PeftStep(hf_bridge.peft_prefix_model(hf_bridge.hf_model(frozen, config), prompt, 512), data)
      theirs()
      peft_error = None
    except Exception as e:  # pylint: disable=broad-except  # Reported, not hidden: PEFT's own failure.
      theirs, peft_error = None, f"{type(e).__name__}: {str(e)[:300]}"
    record = {**shape, **_compare("prefix", ours, theirs, batch, repeats)}
    if peft_error:
      record["peft_error"] = peft_error
    results.append(record)
  return results


def print_targets(results: list[dict]) -> None:
  for r in results:
    if r["method"] == "prompt":
      bench_common.target_line(f"prompt-tuning step, {r['size']}, ours / PEFT examples/s", r["ratio_ours_over_peft"],
                               1.0)
    elif "peft_error" in r:
      print(f"  prefix tuning, {r['size']}: PEFT fails: {r['peft_error']}; ours runs at "
            f"{r['ours_examples_per_s']:.3g} examples/s")
    else:
      print(f"  prefix tuning, {r['size']}: ours / PEFT examples/s = {r['ratio_ours_over_peft']:.3g} (PEFT's T5 "
            "prefixes act on the decoder's cache only; ours on encoder, decoder and cross attention)")


def main(argv=None):
  parser = bench_common.step_shape_parser(__doc__.split("\n")[0], SIZES)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--methods", default="prompt,prefix")
  args = parser.parse_args(argv)
  reason = bench_common.bench_deps_available()
  if reason:
    bench_common.die(reason)
  kw = dict(bench_common.step_shape_kwargs(args), repeats=args.repeats)
  if args.quick:
    kw.update(QUICK)
  results = run(**kw, methods=tuple(args.methods.split(",")))
  for r in results:
    bench_common.emit({"bench": "step_vs_peft", **r}, args.out)
  print_targets(results)
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
