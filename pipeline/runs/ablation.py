"""The table of an ablation: one row per table row of a head (the head class's ``ablation_rows`` over its
``ablation_variants``, e.g. T2VLAD's paper ablations, Tables 4-5), written as ``ablation.json`` (read by the
report) and as Markdown (``ablation_table`` is the one layout of both).

The paper's "w/o global alignment" / "w/o local alignment" rows remove a branch *at test time* from the model
trained with both: T2VLAD's rows ``no_global`` / ``no_local`` are the ``full`` run evaluated with ``branches``
``local`` / ``global``; models trained with one branch only are their own rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.heads.base import RetrievalHead


def ablation_rows(head_class: type[RetrievalHead]) -> dict[str, tuple[str, str]]:
    """Table row -> (trained variant, branches scored at test time), in table order (default: one row per variant)."""
    return head_class.ablation_rows or {
        variant: (variant, "both") for variant in head_class.ablation_variants
    }


ABLATION_JSON = "ablation.json"
_COLUMNS = (("R1", "R@1"), ("R5", "R@5"), ("R10", "R@10"), ("MdR", "MdR"))


def ablation_table(results: dict[str, dict[str, dict[str, float]]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows, one per table row: text-to-video and video-to-text R@1, R@5, R@10 (%) and median rank.

    ``results`` maps variant -> ``retrieval_metrics`` output (``{"t2v": {...}, "v2t": {...}}``)."""
    head = ["variant"] + [f"t2v {label}" for _, label in _COLUMNS] + [f"v2t {label}" for _, label in _COLUMNS]
    rows = [
        [variant] + [f"{float(metrics[d][key]):.1f}" for d in ("t2v", "v2t") for key, _ in _COLUMNS]
        for variant, metrics in results.items()
    ]
    return head, rows


def ablation_markdown(results: dict[str, dict[str, dict[str, float]]], title: str = "") -> str:
    """``ablation_table`` as Markdown (``### title`` and one pipe table), the file ``t2v ablation`` prints."""
    head, rows = ablation_table(results)
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def ablation_json(results: dict[str, dict[str, dict[str, float]]], title: str) -> dict[str, Any]:
    """The content of ``ablation.json``: the title and, in table order, each variant with its metrics."""
    return {"title": title, "variants": [{"variant": v, "metrics": m} for v, m in results.items()]}


def load_ablation(path: Path) -> tuple[str, dict[str, dict[str, dict[str, float]]]]:
    """Title and results (in table order) of an ``ablation.json``. ConfigError naming the file if unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return str(data["title"]), {str(v["variant"]): v["metrics"] for v in data["variants"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not an ablation results file: {err!r}") from err
