"""t2v library core: decoding, shard store, heads, training, metrics and stores (no Luigi here)."""

from pipeline import compat as _compat  # noqa: F401  (must run before anything imports torchvision)
