"""Training curves: one JSON line per epoch (``curves.jsonl``) and a PNG plot (``curves.png``, matplotlib Agg).

Each history entry is ``{"epoch": int (1-based), "train_loss": float, "lr": float, "elapsed_s": float,
"val": {"t2v": {...}, "v2t": {...}}}`` (recalls in percent). Both files are rewritten whole from the
history kept in the checkpoint, so a resumed run never has duplicate or missing epochs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

from data_manifest.atomic import atomic_path, write_text
from pipeline.runs.record import RunFolder

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_curves(history: list[dict[str, Any]], run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``curves.jsonl`` and ``curves.png`` in ``run_dir`` atomically; return their paths."""
    folder = RunFolder(run_dir)
    jsonl, png = folder.curves_jsonl, folder.curves_png
    write_text(jsonl, "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    for key, label in (("R1", "R@1"), ("R5", "R@5"), ("R10", "R@10"), ("geometric_mean", "GM(R@1,5,10)")):
        ax_val.plot(epochs, [h["val"]["t2v"][key] for h in history], marker="o", ms=3, label=f"t2v {label}")
    ax_val.set(xlabel="epoch", ylabel="%", title="validation (text to video)", ylim=(0, 100))
    ax_val.legend(fontsize=8)
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return jsonl, png
