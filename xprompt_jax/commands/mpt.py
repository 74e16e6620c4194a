"""`xprompt-jax mpt`: multitask prompt tuning end to end (teachers, distilled source training, target adaptation).

    xprompt-jax mpt --gin_file=runs/mpt_smoke_cpu.gin --model_dir=/tmp/mpt_smoke
    xprompt-jax mpt --gin_file=recipes/mpt_paper.gin --gin.TrainConfig.initial_checkpoint="'gs://...'" \
      --model_dir=/mnt/bucket/mpt --stage=ablations

--stage: `all` (teachers -> source -> targets; few-shot when MPTConfig.few_shot is set), `teachers`, `source`,
`targets` (needs the source export), `ablations` (the paper's ablation table from one command), `lengths` (the
prompt-length sweep over MPTConfig.lengths) or `params` (the parameter-count table only). Every stage resumes
from --model_dir; finished stages are skipped. Tables go to stdout and to <model_dir>/report.md, one learning-curve
png per stage run to <model_dir>/plots/.
"""
import json
import os

from absl import flags

from xprompt_jax import exit_status
from xprompt_jax.commands import common

common.define_gin_flags()
common.define_run_flags()
STAGES = ("all", "teachers", "source", "targets", "ablations", "lengths", "params")
flags.DEFINE_enum("stage", "all", STAGES, "Which part of the MPT pipeline to run.")
flags.DEFINE_list("ablations", [], "Ablation rows to run with --stage=ablations (default: all of them).")


def main(argv):
  common.refuse_gcs(flags.FLAGS.model_dir, "--model_dir", "MPT")
  common.init_run(argv)
  common.refuse_unused_macro("TRAIN_STEPS", "mpt", "its stages count their own steps (MPTConfig.teacher_steps, "
                             "source_epochs, target_steps)")
  from xprompt_jax.pipelines import mpt
  from xprompt_jax.pipelines import mpt_ablations
  from xprompt_jax.pipelines import mpt_report as report
  from xprompt_jax.training import stages
  f = flags.FLAGS
  workdir = f.model_dir
  os.makedirs(workdir, exist_ok=True)
  cfg = mpt.MPTConfig()
  base = mpt.Base.from_gin(cfg.source_tasks[0])
  params = report.parameter_table(base.config.emb_dim, cfg.prompt_length, len(cfg.target_tasks), cfg.rank,
                                  model=base.config.name)
  sections = [("Trainable parameters", params)]
  print(params)
  if f.stage == "params":
    report.write_report(os.path.join(workdir, "report.md"), sections)
    return
  try:
    frozen = mpt.Frozen.load(base)
    backbone = frozen.ref["path"]
    if f.stage == "teachers":
      _, evals = mpt.train_teachers(workdir, cfg, base, frozen)
      sections.append(("Teachers (prompt tuning per source task)", json.dumps(evals, indent=1)))
    elif f.stage == "source":
      teachers, _ = mpt.train_teachers(workdir, cfg, base, frozen)
      _, evals = mpt.train_source(workdir, cfg, base, frozen, teachers)
      sections.append(("Source training (distilled)", json.dumps(evals, indent=1)))
    elif f.stage == "targets":
      export = mpt.load_source_export(os.path.join(workdir, "source", mpt.SOURCE_EXPORT))
      targets = mpt.adapt_targets(workdir, cfg, base, frozen, export)
      sections.append(("Target adaptation", report.targets_table(targets, backbone)))
    elif f.stage == "all":
      result = mpt.run_pipeline(workdir, cfg, base, frozen)
      sections.append(("Teachers (prompt tuning per source task)", json.dumps(result["teachers"], indent=1)))
      sections.append(("Source training (distilled)", json.dumps(result["source"], indent=1)))
      sections.append(("Target adaptation", report.targets_table(result["targets"], backbone)))
    elif f.stage == "ablations":
      rows = mpt_ablations.run_ablations(workdir, cfg, base, f.ablations or None, frozen)
      sections.append(("Ablations", report.ablation_table(rows, backbone)))
    elif f.stage == "lengths":
      sweep = mpt_ablations.run_length_sweep(workdir, cfg, base, frozen=frozen)
      body = "\n\n".join(f"L = {length}\n\n{report.targets_table(r['targets'], backbone)}"
                         for length, r in sweep.items())
      sections.append(("Prompt length sweep", body))
  except stages.Preempted as e:
    print(str(e))
    return exit_status.PREEMPTED
  for heading, body in sections[1:]:
    print(f"\n{heading}\n{body}")
  plots = report.plot_all_stages(workdir)
  path = report.write_report(os.path.join(workdir, "report.md"), sections)
  print(f"\nreport: {path}; {len(plots)} learning-curve plots in {os.path.join(workdir, 'plots')}; distilled "
        f"prompt: {os.path.join(workdir, 'source', mpt.SOURCE_EXPORT)}")
