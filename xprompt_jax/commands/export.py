"""`xprompt-jax export`: a trained run's parameters in another stack's format.

    xprompt-jax export --gin_file=runs/smoke_cpu.gin --model_dir=/tmp/xprompt_smoke --format=peft \
      --output=/tmp/adapter --base_model=/tmp/t5_hf
    xprompt-jax export ... --format=npy --output=/tmp/prompt.npy                # prompt-tuning's PROMPT_FILE
    xprompt-jax export ... --format=t5x --output=/tmp/t5x/checkpoint_0          # frozen model + encoder/prompt/...
    xprompt-jax export ... --format=t5x_numpy --output=/tmp/pt_model_dir        # numpy_checkpoints/checkpoint_<step>/

`peft` writes adapter_config.json + adapter_model.safetensors for `peft.PeftModel.from_pretrained` on the HF T5
that `xprompt-jax convert` writes (prompt tuning, XPrompt with its masks folded in, MPT); prefix tuning is
refused with the reason (see docs/from_peft.md). The other formats are google-research/prompt-tuning's
(docs/from_t5x.md) and need a prompt-tuning or XPrompt run.
"""
from absl import flags

from xprompt_jax.commands import common

FORMATS = ("peft", "npy", "t5x", "t5x_numpy")

common.define_gin_flags()
common.define_run_flags()
common.define_once(flags.DEFINE_string, "step", "latest", "Checkpoint: latest, best or a step number.")
common.define_once(flags.DEFINE_enum, "format", None, "What to write.", enum_values=FORMATS)
common.define_once(flags.DEFINE_string, "output", None, "Folder (peft, t5x, t5x_numpy) or file (npy) to write.")
common.define_once(flags.DEFINE_string, "base_model", None,
                   "peft: base_model_name_or_path recorded in adapter_config.json (the converted HF T5 folder or "
                   "hub name).")


def main(argv):
  common.init_run(argv)
  if not flags.FLAGS.format or not flags.FLAGS.output:
    raise ValueError(f"--format (one of {', '.join(FORMATS)}) and --output are required")
  from xprompt_jax.interop import peft as peft_io
  from xprompt_jax.interop import run_prompts
  from xprompt_jax.interop import t5x_prompt
  from xprompt_jax.training import restore
  run = restore.load_run(flags.FLAGS.model_dir, flags.FLAGS.step)
  fmt, out = flags.FLAGS.format, flags.FLAGS.output
  if fmt == "peft":
    name, tree = run_prompts.inference_trainable(run)
    fields = peft_io.export_peft(out, name, tree, run.config, flags.FLAGS.base_model)
    print(f"wrote a PEFT {fields['peft_type']} adapter ({fields['num_virtual_tokens']} virtual tokens, step "
          f"{run.step}) to {out}")
    return
  prompt = run_prompts.single_prompt(run, f"--format={fmt}")
  if fmt == "npy":
    t5x_prompt.write_npy(out, prompt)
  elif fmt == "t5x_numpy":
    out = t5x_prompt.write_numpy_checkpoint(out, run.step, prompt)
  else:
    from xprompt_jax.checkpoints import tree as tree_lib
    frozen = tree_lib.unstack_layers(tree_lib.to_numpy(run.frozen)) if tree_lib.is_scanned(run.frozen) else run.frozen
    t5x_prompt.write_t5x_checkpoint(out, prompt, frozen, step=run.step)
  print(f"wrote the {prompt.shape[0]}x{prompt.shape[1]} prompt of step {run.step} as {fmt} to {out}")
