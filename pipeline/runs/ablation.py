"""The Markdown table of an ablation: one row per table row of a head (the head class's ``ablation_rows`` over its
``ablation_variants``, e.g. T2VLAD's paper ablations, Tables 4-5).

The paper's "w/o global alignment" / "w/o local alignment" rows remove a branch *at test time* from the model
trained with both: T2VLAD's rows ``no_global`` / ``no_local`` are the ``full`` run evaluated with ``branches``
``local`` / ``global``; models trained with one branch only are their own rows.
"""

from __future__ import annotations

from pipeline.heads.base import RetrievalHead


def ablation_rows(head_class: type[RetrievalHead]) -> dict[str, tuple[str, str]]:
    """Table row -> (trained variant, branches scored at test time), in table order (default: one row per variant)."""
    return head_class.ablation_rows or {
        variant: (variant, "both") for variant in head_class.ablation_variants
    }


_COLUMNS = (("R1", "R@1"), ("R5", "R@5"), ("R10", "R@10"), ("MdR", "MdR"))


def ablation_markdown(results: dict[str, dict[str, dict[str, float]]], title: str = "") -> str:
    """Markdown table, one row per variant (table row): text-to-video and video-to-text R@1, R@5, R@10 (%) and median rank.

    ``results`` maps variant -> ``retrieval_metrics`` output (``{"t2v": {...}, "v2t": {...}}``)."""
    head = ["variant"] + [f"t2v {label}" for _, label in _COLUMNS] + [f"v2t {label}" for _, label in _COLUMNS]
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for variant, metrics in results.items():
        cells = [variant]
        for direction in ("t2v", "v2t"):
            for key, _ in _COLUMNS:
                value = float(metrics[direction][key])
                cells.append(f"{value:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
