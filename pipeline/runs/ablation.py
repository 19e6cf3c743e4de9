"""The Markdown table of an ablation: one row per variant of a head (the variants are the head class's
``ablation_variants``, e.g. T2VLAD's paper ablations, Tables 4-5)."""

from __future__ import annotations

_COLUMNS = (("R1", "R@1"), ("R5", "R@5"), ("R10", "R@10"), ("MdR", "MdR"))


def ablation_markdown(results: dict[str, dict[str, dict[str, float]]], title: str = "") -> str:
    """Markdown table, one row per variant: text-to-video and video-to-text R@1, R@5, R@10 (%) and median rank.

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
