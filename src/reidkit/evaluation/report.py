"""Evaluation results as a terminal table, a JSON document and a CMC plot."""

from __future__ import annotations

import os
from typing import Any

from rich.table import Table

from reidkit.evaluation.metrics import EvalResult
from reidkit.io import atomic_path


def result_table(results: dict[str, EvalResult], title: str = "Evaluation") -> Table:
    """One row per named result: rank-1/5/10, mAP, mINP in percent."""
    table = Table(title=title)
    for col in ("", "rank-1", "rank-5", "rank-10", "mAP", "mINP", "queries"):
        table.add_column(col, justify="right" if col else "left")
    for name, r in results.items():
        s = r.summary()
        table.add_row(
            name,
            *(f"{s[k]:.2f}" for k in ("rank1", "rank5", "rank10", "mAP", "mINP")),
            f"{r.num_valid}",
        )
    return table


def result_json(r: EvalResult) -> dict[str, Any]:
    """Figures in percent plus the CMC curve (fractions), for ``--json``."""
    return {
        **{k: round(v, 4) for k, v in r.summary().items()},
        "cmc": [round(float(c), 6) for c in r.cmc],
        "num_valid_queries": r.num_valid,
        "num_skipped_queries": r.num_skipped,
    }


def plot_cmc(results: dict[str, EvalResult], path: str | os.PathLike[str]) -> None:
    """Write the CMC curves (rank 1..len(cmc)) to an image file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for name, r in results.items():
        ranks = range(1, len(r.cmc) + 1)
        ax.plot(ranks, 100 * r.cmc, label=f"{name} (R1 {100 * r.rank(1):.1f}, mAP {100 * r.mAP:.1f})")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title("CMC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=os.path.splitext(str(path))[1].lstrip(".") or "png")
    plt.close(fig)
