"""The T2VLAD ablations of the paper (Tables 4-5): trained variants as head options, table rows as (trained variant,
branches scored at test time), and their Markdown results table.

The paper's "w/o global alignment" / "w/o local alignment" rows remove a branch *at test time* from the model
trained with both: here ``no_global`` / ``no_local`` are the ``full`` run evaluated with ``branches`` ``local`` /
``global``. Models trained with one branch only are their own rows, ``trained_local_only`` / ``trained_global_only``.
"""

from __future__ import annotations

from typing import Any

# trained variant name -> head_options merged into the T2VLAD config (pipeline.heads.t2vlad.T2VLADConfig.variant)
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {"variant": "full"},
    "trained_local_only": {"variant": "no_global"},
    "trained_global_only": {"variant": "no_local"},
    "text_only_vlad": {"variant": "text_only_vlad"},
    "separate_vlads": {"variant": "separate_vlads"},
}

# table row -> (trained variant of ABLATIONS, branches scored at test time), in table order
ABLATION_ROWS: dict[str, tuple[str, str]] = {
    "full": ("full", "both"),
    "no_global": ("full", "local"),
    "no_local": ("full", "global"),
    "trained_local_only": ("trained_local_only", "both"),
    "trained_global_only": ("trained_global_only", "both"),
    "text_only_vlad": ("text_only_vlad", "both"),
    "separate_vlads": ("separate_vlads", "both"),
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
