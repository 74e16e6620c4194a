"""XPrompt's procedure settings (`XPromptPipelineConfig`, bound from gin), checked when they are built;
`pipelines.xprompt` runs the stages with them."""
import dataclasses
from typing import Optional

import gin

from xprompt_jax.evaluation import metrics
from xprompt_jax.methods.xprompt import GRANULARITIES
from xprompt_jax.pipelines.xprompt_parts import ratio_tag

SEARCHES = ("retrain_every_ratio", "pruned_dev")

STAGES = ("pt", "importance", "sweep", "rewind", "controls", "report")
PAPER_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class XPromptPipelineConfig:
  """The procedure's settings; the method (`XPrompt.length`, `.pieces`, `.prompt_init`) and the training recipe
  come from the usual gin bindings."""
  ratios: tuple[float, ...] = PAPER_RATIOS  # Fractions of the prompt's pieces removed, each in (0, 1).
  granularity: str = "token_piece"  # "token_piece" (XPrompt) | "token" | "piece".
  token_share: float = 0.5  # Share of the (log) compression done at the token level.
  # Validation metric of the first evaluation task, without its prefix, for ratios and early stopping: a key that
  # task's evaluation reports (MultiRC: 'f1' (F1a) or 'exact_match'; with EvalConfig.mode='both': 'rank/accuracy'...).
  select_metric: str = "accuracy"
  # "retrain_every_ratio": every ratio rewound and retrained, the best on dev (the paper); "pruned_dev": only the
  # `num_rewind` ratios whose pruned, not yet retrained prompt scored best (cheaper).
  search: str = "retrain_every_ratio"
  num_rewind: int = 1  # With search="pruned_dev": how many of the best sweep ratios are rewound and retrained.
  rewind_ratios: tuple[float, ...] = ()  # Explicit ratios to rewind (each must be in `ratios`); () = choose.
  reversed_control: bool = False
  random_control: bool = False
  length_control: bool = False
  token_only: bool = False
  piece_only: bool = False
  control_seed: int = 0
  num_epochs: Optional[float] = None  # Set: every training stage runs ceil(epochs · N / batch) steps.
  # Set: each stage evaluates (and keeps a candidate checkpoint) this many times, evenly over its steps, whatever
  # their number (a 32-shot stage's 200 steps, BoolQ's 58,919); None: every TrainConfig.eval_period steps.
  evaluations_per_stage: Optional[int] = None
  num_shots: Optional[int] = None  # The low-resource setting: train on this many examples (32 in the paper).
  shots_seed: int = 0
  importance_max_examples: Optional[int] = None  # None: the whole training set.
  transfer_from: Optional[str] = None  # model_dir of a finished source XPrompt run (XPrompt Transfer).
  nearest_words: int = 5
  plots: bool = True
  stop_after: Optional[str] = None  # One of STAGES: stop there (the next run resumes).

  def __post_init__(self):
    object.__setattr__(self, "select_metric", metrics.t5_key(self.select_metric, "XPromptPipelineConfig.select_metric"))
    if not self.ratios:
      raise ValueError("XPromptPipelineConfig.ratios is empty")
    for name in ("ratios", "rewind_ratios"):
      for r in getattr(self, name):
        if not (isinstance(r, (int, float)) and 0.0 < r < 1.0):
          raise ValueError(f"XPromptPipelineConfig.{name} holds {r!r}; pruning ratios must be in the open "
                           "interval (0, 1)")
    if len({ratio_tag(r) for r in self.ratios}) != len(self.ratios):
      raise ValueError(f"XPromptPipelineConfig.ratios {self.ratios} repeat a ratio (stage folders use 2 decimals)")
    missing = [r for r in self.rewind_ratios if r not in self.ratios]
    if missing:
      raise ValueError(f"XPromptPipelineConfig.rewind_ratios {missing} are not among ratios {self.ratios}")
    if self.granularity not in GRANULARITIES:
      raise ValueError(f"XPromptPipelineConfig.granularity={self.granularity!r} is not one of {GRANULARITIES}")
    if not 0.0 < self.token_share <= 1.0:
      raise ValueError(f"XPromptPipelineConfig.token_share={self.token_share!r} must be in (0, 1]")
    if self.search not in SEARCHES:
      raise ValueError(f"XPromptPipelineConfig.search={self.search!r} must be one of {', '.join(SEARCHES)}")
    if self.num_rewind < 1:
      raise ValueError(f"XPromptPipelineConfig.num_rewind={self.num_rewind} must be >= 1")
    if self.stop_after is not None and self.stop_after not in STAGES:
      raise ValueError(f"XPromptPipelineConfig.stop_after={self.stop_after!r} is not one of {STAGES}")
    if self.num_shots is not None and self.num_shots <= 0:
      raise ValueError(f"XPromptPipelineConfig.num_shots={self.num_shots} must be positive")
    per_stage = self.evaluations_per_stage
    if per_stage is not None and (not isinstance(per_stage, int) or isinstance(per_stage, bool) or per_stage <= 0):
      raise ValueError(f"XPromptPipelineConfig.evaluations_per_stage={per_stage!r} must be None or an int > 0")
    if self.num_epochs is not None and not self.num_epochs > 0:
      raise ValueError(f"XPromptPipelineConfig.num_epochs={self.num_epochs} must be > 0")
