"""Issue 9 item 5: evaluation speed. Rank classification encoding once vs K forward passes; greedy decoding with a
prompt, ours (`xprompt_jax.models.decoding.greedy_decode`, KV cache in one jitted while-loop) vs HF+PEFT
`generate`.

Rank classification: B inputs of `inputs` tokens (+ prompt) and K candidate targets of `label_len` tokens; the
encode-once scorer (`xprompt_jax.evaluation.scoring`) is timed against K calls of the plain sequence scorer, and
the two score matrices must agree. Decoding: both frameworks decode greedily from the same weights and prompt;
tokens/s counts the tokens each produced (through EOS), and the fraction of identical outputs is reported.

    python bench/eval_bench.py --size small
    python bench/eval_bench.py --quick
"""
import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

import bench_common
import hf_bridge
from step_vs_peft import SIZES, random_batch
from xprompt_jax.evaluation.scoring import make_rank_classification_fn, make_score_fn
from xprompt_jax.methods.prompt import PromptTuning
from xprompt_jax.models import decoding
from xprompt_jax.models.t5 import T5, init_params

QUICK = dict(size="tiny", batch=2, inputs=32, prompt=4, labels=4, label_len=3, decode_len=8, repeats=1)


def generated_lengths(tokens: np.ndarray, eos_id: int = 1) -> np.ndarray:
  """Tokens produced per row, through the first EOS (all of them when there is none)."""
  tokens = np.asarray(tokens)
  is_eos = tokens == eos_id
  first = np.where(is_eos.any(-1), is_eos.argmax(-1) + 1, tokens.shape[-1])
  return first


def rank_benchmark(model, params, injection, enc, labels, repeats) -> dict:
  rank_fn, score_fn = make_rank_classification_fn(model), make_score_fn(model)
  b, k = enc.shape[0], labels.shape[0]

  def once():
    return jax.block_until_ready(rank_fn(params, enc, labels, injection))

  def k_passes():
    return jax.block_until_ready(jnp.stack([score_fn(params, {"encoder_input_tokens": enc, "decoder_target_tokens":
                                                              jnp.broadcast_to(labels[i], (b,) + labels[i].shape)},
                                                     injection) for i in range(k)], axis=1))

  max_diff = float(jnp.max(jnp.abs(once() - k_passes())))
  timing = bench_common.interleaved({"encode_once": once, "k_passes": k_passes}, repeats)
  return {"K": k, "max_score_diff": max_diff, "seconds": {n: t["seconds"] for n, t in timing.items()},
          "speedup": timing["k_passes"]["median_s"] / timing["encode_once"]["median_s"],
          "load_avg": timing["encode_once"]["load_avg"]}


def decode_benchmark(model, params, injection, enc, prompt, config, decode_len, repeats) -> dict:
  ours_fn = jax.jit(lambda p, e, inj: decoding.greedy_decode(model, p, e, max_decode_len=decode_len, injection=inj))
  outputs = {}

  def ours():
    outputs["ours"] = np.asarray(jax.block_until_ready(ours_fn(params, enc, injection)))

  contenders = {"ours": ours}
  if bench_common.bench_deps_available() is None:
    import torch
    peft_model = hf_bridge.peft_prompt_model(hf_bridge.hf_model(params, config), prompt).eval()
    inputs = hf_bridge.torch_batch({"encoder_input_tokens": np.asarray(enc),
                                    "decoder_target_tokens": np.zeros((enc.shape[0], 1), np.int32)})

    def peft():
      with torch.no_grad():
        out = peft_model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                  max_new_tokens=decode_len, do_sample=False, num_beams=1)
      outputs["peft"] = out[:, 1:].numpy()  # Drop the decoder start token.

    contenders["peft"] = peft
  ours()
  for name, fn in contenders.items():
    fn()  # Warm up (compile).
  timing = bench_common.interleaved(contenders, repeats)
  out = {"decode_len": decode_len, "load_avg": timing["ours"]["load_avg"], "tokens_per_s": {}}
  for name in contenders:
    produced = int(generated_lengths(outputs[name]).sum())
    out["tokens_per_s"][name] = produced / timing[name]["median_s"]
  if "peft" in outputs:
    ours_out, peft_out = outputs["ours"], np.zeros_like(outputs["ours"])
    peft_out[:, :outputs["peft"].shape[1]] = outputs["peft"][:, :decode_len]
    same = [np.array_equal(o[:n], p[:n]) for o, p, n in zip(ours_out, peft_out, generated_lengths(ours_out))]
    out["identical_outputs"] = float(np.mean(same))
    out["speedup_over_peft"] = out["tokens_per_s"]["ours"] / out["tokens_per_s"]["peft"]
  return out


def run(size="small", batch=8, inputs=256, prompt=100, labels=4, label_len=4, decode_len=32, repeats=3,
        parts=("rank", "decode")) -> dict:
  config = SIZES[size]
  params = init_params(config, jax.random.PRNGKey(0))
  model = T5(config)
  method = PromptTuning(length=prompt, prompt_init="sampled_vocab")
  trainable = method.init(jax.random.PRNGKey(1), params, config)
  injection = method.inject(trainable, {}, config)
  enc = jnp.asarray(random_batch(0, batch, inputs, 2, config.vocab_size)["encoder_input_tokens"])
  label_tokens = jnp.asarray(random_batch(1, labels, 2, label_len, config.vocab_size)["decoder_target_tokens"])
  out = {"size": size, "batch": batch, "inputs": inputs, "prompt": prompt}
  if "rank" in parts:
    out["rank"] = rank_benchmark(model, params, injection, enc, label_tokens, repeats)
  if "decode" in parts:
    out["decode"] = decode_benchmark(model, params, injection, enc, np.asarray(trainable["prompt"]), config,
                                     decode_len, repeats)
  return out


def print_targets(out: dict) -> None:
  r = out.get("rank")
  if r:
    bench_common.target_line(f"rank classification, K={r['K']}: K passes time / encode-once time", r["speedup"],
                             0.8 * r["K"])
  d = out.get("decode", {})
  if "speedup_over_peft" in d:
    bench_common.target_line("greedy decoding tokens/s, ours / HF+PEFT generate", d["speedup_over_peft"], 3.0)
    print(f"  identical greedy outputs: {d['identical_outputs']:.0%}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="small", choices=sorted(SIZES))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--inputs", type=int, default=256)
  parser.add_argument("--prompt", type=int, default=100)
  parser.add_argument("--labels", type=int, default=4)
  parser.add_argument("--decode_len", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default=None)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--parts", default="rank,decode", help="Comma-separated: rank, decode.")
  args = parser.parse_args(argv)
  parts = tuple(p for p in args.parts.split(",") if p)
  if not parts or set(parts) - {"rank", "decode"}:
    parser.error(f"--parts={args.parts!r}: give rank, decode or both")
  kw = dict(size=args.size, batch=args.batch, inputs=args.inputs, prompt=args.prompt, labels=args.labels,
            decode_len=args.decode_len, repeats=args.repeats, parts=parts)
  if args.quick:
    kw.update(QUICK)
  out = run(**kw)
  bench_common.emit({"bench": "eval", **out}, args.out)
  print_targets(out)
  return out


if __name__ == "__main__":
  main(sys.argv[1:])
