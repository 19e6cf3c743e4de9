"""Make torchvision importable on a CPU-only torch whose registry torchvision wheel is a CUDA build.

The CUDA build's ``_C.so`` fails to load against CPU torch, and ``import torchvision`` then dies with
``operator torchvision::nms does not exist`` (this also breaks timm and transformers' BERT imports).
We try to load the library ourselves; if that fails we register the two op schemas torchvision's Python
code looks up at import time. The C++ kernels (nms, roi_align) stay unavailable; t2v does not use them.
Where torchvision loads normally this module does nothing.

Importing this module costs nothing: it installs an import hook that applies the fix just before the first
``import torchvision`` (direct, or through timm / transformers), so commands that never touch torchvision do not
pay for importing torch.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from typing import Any

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_fragment: Any = None


def _torchvision_ops_present() -> bool:
    import torch

    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key("torchvision::nms", "CPU")) or hasattr(
            torch.ops.torchvision, "nms"
        )
    except (RuntimeError, AttributeError):
        return False


def ensure_torchvision_importable() -> None:
    """Idempotently make ``import torchvision`` work; no-op when torchvision is absent or healthy."""
    global _fragment
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.submodule_search_locations is None or _torchvision_ops_present():
        return
    package_dir = list(spec.submodule_search_locations)[0]
    for name in os.listdir(package_dir):
        if name.startswith("_C") and name.endswith(".so"):
            try:
                torch.ops.load_library(os.path.join(package_dir, name))
                return
            except OSError:
                break
    if _fragment is None:
        _fragment = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS.values():
            _fragment.define(schema)


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs ``ensure_torchvision_importable`` once, when ``torchvision`` is first imported; finds nothing itself."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            ensure_torchvision_importable()
        return None


if "torchvision" not in sys.modules and not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
    sys.meta_path.insert(0, _BeforeTorchvision())
