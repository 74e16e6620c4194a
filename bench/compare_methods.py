"""Runs every method and control on the local backbone over several seeds and writes
docs/studies/local_backbone/results_local.md.

    # The real comparison (a `slow` job; see gin/pretrain/compare_local.gin for its duration):
    python bench/compare_methods.py --gin_file=pretrain/compare_local.gin --results_dir=/tmp/compare_local
    # The same pipeline on a tiny random T5 with seconds-scale steps (a plumbing check, ~10 min on 2 cores):
    python bench/compare_methods.py --quick --results_dir=/tmp/compare_quick --page=/tmp/compare_quick/page.md

Rerunning resumes (finished runs are read back from their result.json). The page and its plot are generated from
`<results_dir>/results.jsonl` only; never edit them by hand.
"""
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xprompt_jax import paths  # noqa: E402
from xprompt_jax.commands import common  # noqa: E402

common.define_gin_flags()
flags.DEFINE_string("results_dir", None, "Where every run's folder and results.jsonl go.")
flags.DEFINE_string("page", str(paths.PROJECT_ROOT / "docs" / "studies" / "local_backbone" / "results_local.md"),
                    "The generated results page.")
flags.DEFINE_bool("quick", False, "Tiny random T5, CB only, two seeds, a few steps per stage: checks the whole "
                  "pipeline end to end in minutes (pretrain/compare_quick.gin).")

flags.DEFINE_bool("page_only", False, "Run nothing: write the page from the runs already finished (the others "
                  "are listed as missing).")
flags.DEFINE_string("compilation_cache", "", "JAX's persistent compilation cache folder, shared by the runs (they "
                    "compile the same train and eval steps again and again); default <results_dir>/jax_cache, "
                    "'none' disables it.")

QUICK_GIN = "pretrain/compare_quick.gin"


def enable_compilation_cache(folder: str) -> None:
  """Every run builds its own jitted step; with the persistent cache the second run of a shape loads it instead."""
  import jax
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.results_dir:
    raise app.UsageError("--results_dir is required")
  gin_files = ([QUICK_GIN] if f.quick else []) + list(f.gin_file)
  if not gin_files:
    raise app.UsageError("give --gin_file=pretrain/compare_local.gin (the real run) or --quick")
  cache = f.compilation_cache or os.path.join(f.results_dir, "jax_cache")
  if cache != "none":
    enable_compilation_cache(cache)
  from xprompt_jax.pipelines import compare  # Registers CompareConfig before the config is parsed.
  common.parse_gin(gin_files, f.gin_bindings, f.gin_search_paths)
  command = "python bench/compare_methods.py " + " ".join(a for a in argv_for_page(sys.argv[1:]))
  result = compare.compare(f.results_dir, f.page, command=command, run_missing=not f.page_only)
  errors = [r for r in result["records"] if r.get("error")]
  print(f"compare: {len(result['records'])} records, {len(errors)} failed; page: {f.page}")


def argv_for_page(args):
  """The command line as the page quotes it (absolute results paths kept, they say where the records are)."""
  return [a for a in args if not a.startswith("--verbosity")]


if __name__ == "__main__":
  if not any(a.startswith(("--verbosity", "-v=")) for a in sys.argv[1:]):
    sys.argv.insert(1, "--verbosity=-1")  # Warnings and errors only, as the xprompt-jax commands.
  app.run(main, flags_parser=lambda argv: flags.FLAGS(common.rewrite_gin_flags(argv)))
