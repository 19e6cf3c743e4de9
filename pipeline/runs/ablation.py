"""The T2VLAD ablations of the paper (Tables 4-5) as head options, and their Markdown results table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

# variant name -> head_options merged into the T2VLAD config (pipeline.heads.t2vlad.T2VLADConfig.variant)
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {"variant": "full"},
    "no_global": {"variant": "no_global"},
    "no_local": {"variant": "no_local"},
    "text_only_vlad": {"variant": "text_only_vlad"},
    "separate_vlads": {"variant": "separate_vlads"},
}

ABLATION_JSON = "ablation.json"
_COLUMNS = (("R1", "R@1"), ("R5", "R@5"), ("R10", "R@10"), ("MdR", "MdR"))


def ablation_table(results: dict[str, dict[str, dict[str, float]]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows, one per variant: text-to-video and video-to-text R@1, R@5, R@10 (%) and median rank.

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
