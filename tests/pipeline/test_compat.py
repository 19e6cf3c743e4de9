"""The torchvision-on-CPU-torch fix: free until torchvision is imported, then torchvision, timm and BERT load."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_importing_pipeline_does_not_import_torch() -> None:
    assert _run("import sys, pipeline; print('torch' in sys.modules)") == "False"


def test_torchvision_timm_and_transformers_import_after_pipeline() -> None:
    code = (
        "import pipeline, torchvision, timm\n"
        "from transformers import BertModel\n"
        "m = torchvision.models.mobilenet_v2()\n"
        "print(type(m).__name__, BertModel.__name__)"
    )
    assert _run(code) == "MobileNetV2 BertModel"


def test_fix_is_idempotent() -> None:
    code = (
        "import pipeline, torchvision\n"
        "from pipeline.compat import ensure_torchvision_importable\n"
        "ensure_torchvision_importable(); ensure_torchvision_importable(); print('ok')"
    )
    assert _run(code) == "ok"
