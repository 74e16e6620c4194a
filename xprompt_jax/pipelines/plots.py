"""XPrompt figures (matplotlib, Agg backend): the pruning curve and the token × piece importance heatmap.

    pruning_curve("curve.png", rows, "super_glue_cb_v102/accuracy", note)   # rows of report.collect_rows
    importance_heatmap("heat.png", token_scores [L], piece_scores [L, k], kept [L, k] bool or None, note)

The curve shows the validation metric against the pruning ratio for the pruned, not retrained prompt, the rewound
and retrained XPrompt point(s) and the controls, with prompt tuning as a horizontal reference line. The heatmap
shows the piece importance per prompt token (rows) and piece (columns), a side column with the token importance,
and hatches the pruned cells in grey (as the paper's Fig. 10).
"""
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def pruning_curve(path: str, rows: Sequence[dict], metric_key: str, note: str = "") -> None:
  fig, ax = plt.subplots(figsize=(7, 4.5))
  sweep = sorted((r["ratio"], r["metric"]) for r in rows if r["variant"] == "pruned_only")
  if sweep:
    ax.plot([100 * x for x, _ in sweep], [y for _, y in sweep], "o-", label="pruned (not retrained)")
  for r in rows:
    if r["variant"] == "prompt_tuning":
      ax.axhline(r["metric"], color="grey", linestyle="--", label=f"prompt tuning ({r['metric']:.2f})")
    elif r["variant"] not in ("pruned_only",):
      marker = "*" if r["variant"] == "xprompt" else "s"
      ax.plot([100 * r["ratio"]], [r["metric"]], marker, markersize=12 if marker == "*" else 7,
              label=f"{r['variant']} (retrained)")
  ax.set_xlabel("pruning ratio (% of prompt pieces removed)")
  ax.set_ylabel(metric_key)
  ax.set_xlim(0, 100)
  ax.legend(fontsize=8, loc="best")
  ax.set_title("XPrompt pruning curve" + ("\n" + _wrap(note) if note else ""), fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def importance_heatmap(path: str, token_scores: np.ndarray, piece_scores: np.ndarray,
                       kept: Optional[np.ndarray] = None, note: str = "") -> None:
  token_scores = np.asarray(token_scores, np.float64)
  piece_scores = np.asarray(piece_scores, np.float64)
  length, pieces = piece_scores.shape
  if token_scores.shape != (length,):
    raise ValueError(f"importance_heatmap: token scores of shape {token_scores.shape} do not match piece scores "
                     f"{piece_scores.shape}")
  if kept is not None and np.shape(kept) != piece_scores.shape:
    raise ValueError(f"importance_heatmap: kept mask of shape {np.shape(kept)} != piece scores {piece_scores.shape}")
  width = max(4.0, 2 + 0.35 * pieces)
  fig, (ax_piece, ax_token) = plt.subplots(1, 2, figsize=(width, 1.8 + 0.3 * length),
                                           gridspec_kw={"width_ratios": [pieces, 1.5]})
  image = ax_piece.imshow(piece_scores, aspect="auto", cmap="viridis", interpolation="nearest")
  fig.colorbar(image, ax=ax_piece, fraction=0.05, label="piece importance E|dL/dζ|")
  if kept is not None:
    rows, cols = np.nonzero(~np.asarray(kept, bool))
    for i, j in zip(rows, cols):
      ax_piece.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="lightgrey", edgecolor="grey",
                                       hatch="//", alpha=0.9))
  ax_piece.set_xlabel("piece")
  ax_piece.set_ylabel("prompt token")
  ax_piece.set_title("pieces (grey: pruned)", fontsize=9)
  ax_token.imshow(token_scores[:, None], aspect="auto", cmap="magma", interpolation="nearest")
  ax_token.set_xticks([])
  ax_token.set_yticks([])
  ax_token.set_title("token\nE|dL/dγ|", fontsize=8)
  if note:
    fig.suptitle(_wrap(note, int(width * 14)), fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _wrap(text: str, width: int = 90) -> str:
  import textwrap
  return "\n".join(textwrap.wrap(text, width))
