"""Text side of training: frozen token features cached on disk, or the encoder fine-tuned end to end.

Frozen mode runs the text encoder once per distinct caption and keeps its token features in an HDF5 file
``<cache_dir>/text-<model digest[:12]>-L<max_length>.h5`` keyed by the caption text:

| dataset    | shape      | meaning                                                 |
|------------|------------|---------------------------------------------------------|
| `texts`    | (N,) str   | the captions, in insertion order                        |
| `offsets`  | (N+1,) i64 | tokens of text i are `features[offsets[i]:offsets[i+1]]` |
| `features` | (T, D) f16 | last-layer token features ([CLS] ... [SEP], no padding) |

New captions are appended by rewriting the file atomically (temp file + rename). float16 storage keeps the cache
small (MSR-VTT's 200k captions x ~15 tokens x 384 dims = 2.3 GB); the rounding (~1e-3 relative) is far below the
noise of training. A different model folder or ``max_length`` gives another file, never a stale hit.

Sentence vectors: a frozen encoder's [CLS] state is not a sentence embedding unless the model was trained to pool
it (all-MiniLM-L6-v2 was trained with the mean over real tokens). So frozen batches carry ``TextBatch.cls`` = the
encoder's own pooling (``text_encoder.encoder_pooling``) of the cached tokens, which heads take as their sentence
feature; fine-tuned batches carry none, and heads take the [CLS] token, as the papers do.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import torch

from data_manifest.atomic import atomic_path
from pipeline.errors import ConfigError
from pipeline.heads.base import TextBatch
from pipeline.text_encoder import TextEncoder, encoder_pooling, model_dir_digest, resolve_text_model_dir
from pipeline.training.config import TextConfig


def pad_tokens(items: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ragged (L_i, D) arrays into features (B, L_max, D) float32 and mask (B, L_max) bool (True = token)."""
    length = max(1, max(len(a) for a in items))
    dim = items[0].shape[1]
    feats = np.zeros((len(items), length, dim), np.float32)
    mask = np.zeros((len(items), length), bool)
    for i, a in enumerate(items):
        feats[i, : len(a)] = a
        mask[i, : len(a)] = True
    return torch.from_numpy(feats), torch.from_numpy(mask)


def frozen_text_batch(tokens: torch.Tensor, mask: torch.Tensor, pooling: str) -> TextBatch:
    """TextBatch of a frozen encoder's tokens (B, L, D) with ``cls`` = its sentence vector: the mean over real tokens
    (``pooling="mean"``) or the first token (``"cls"``)."""
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(tokens.dtype)
        sentence = (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)
    else:
        sentence = tokens[:, 0]
    return TextBatch(tokens=tokens, mask=mask, cls=sentence)


class FrozenTextCache:
    """Token features of a frozen encoder, computed once per caption and kept on disk and in memory."""

    def __init__(self, cache_dir: str | Path, model: str | Path | None = None, max_length: int = 37):
        self.model_dir = resolve_text_model_dir(model)
        self.max_length = max_length
        self.digest = model_dir_digest(self.model_dir)
        self.pooling = encoder_pooling(self.model_dir)
        self.path = Path(cache_dir) / f"text-{self.digest[:12]}-L{max_length}.h5"
        self._tokens: dict[str, np.ndarray] = {}
        self.dim: int | None = None
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            with h5py.File(self.path, "r") as f:
                texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in f["texts"][()]]
                offsets = f["offsets"][()]
                feats = f["features"][()]
        except (OSError, KeyError) as err:
            raise ConfigError(
                f"{self.path}: unreadable text-feature cache ({err}); delete it to rebuild"
            ) from err
        self.dim = int(feats.shape[1])
        self._tokens = {t: feats[offsets[i] : offsets[i + 1]] for i, t in enumerate(texts)}

    def __contains__(self, text: str) -> bool:
        return text in self._tokens

    def __len__(self) -> int:
        return len(self._tokens)

    def ensure(
        self,
        texts: Iterable[str],
        batch_size: int = 128,
        device: torch.device | str = "cpu",
        progress: bool = False,
    ) -> int:
        """Encode the captions not yet cached (one encoder load, batches of ``batch_size``); returns how many."""
        missing = sorted({t for t in texts if t not in self._tokens})
        if not missing:
            return 0
        encoder = TextEncoder(self.model_dir, max_length=self.max_length).to(device)
        self.dim = encoder.dim
        chunks = range(0, len(missing), batch_size)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="text features", unit="batch")
        with torch.no_grad():
            for i in chunks:
                batch = missing[i : i + batch_size]
                tok = encoder(batch)
                feats = tok.features.float().cpu().numpy().astype(np.float16)
                lengths = tok.mask.sum(1).cpu().numpy()
                for text, f, n in zip(batch, feats, lengths, strict=True):
                    self._tokens[text] = f[:n]
        self._save()
        return len(missing)

    def _save(self) -> None:
        texts = list(self._tokens)
        lengths = np.array([len(self._tokens[t]) for t in texts], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        feats = np.concatenate([self._tokens[t] for t in texts]).astype(np.float16)
        with atomic_path(self.path) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("texts", data=np.array(texts, dtype=object), dtype=h5py.string_dtype("utf-8"))
            f.create_dataset("offsets", data=offsets)
            f.create_dataset("features", data=feats, chunks=True, compression="lzf")
            f.attrs["model_digest"] = self.digest
            f.attrs["max_length"] = self.max_length

    def batch(self, texts: list[str]) -> TextBatch:
        """Padded token features of cached captions and their sentence vectors (``frozen_text_batch``);
        ConfigError naming the first uncached one."""
        for t in texts:
            if t not in self._tokens:
                raise ConfigError(f"{self.path}: caption not in the text-feature cache: {t!r}")
        feats, mask = pad_tokens([self._tokens[t].astype(np.float32) for t in texts])
        return frozen_text_batch(feats, mask, self.pooling)


class TextSide(torch.nn.Module):
    """What the training loop calls to turn captions into a TextBatch on ``device``.

    ``frozen``: looked up in a FrozenTextCache (no parameters). ``finetune``: the TextEncoder runs in the graph
    and its parameters are trained (with ``TextConfig.lr``)."""

    def __init__(self, config: TextConfig, cache_dir: str | Path):
        super().__init__()
        self.mode = config.mode
        self.cache: FrozenTextCache | None = None
        self.encoder: TextEncoder | None = None
        if self.mode == "frozen":
            self.cache = FrozenTextCache(cache_dir, config.model or None, config.max_length)
            self.model_digest = self.cache.digest
        else:
            self.encoder = TextEncoder(config.model or None, max_length=config.max_length)
            self.encoder.model.train()
            self.model_digest = model_dir_digest(self.encoder.model_dir)

    def prepare(
        self, texts: Iterable[str], device: torch.device | str = "cpu", progress: bool = False
    ) -> None:
        """Frozen mode: make sure every caption is cached. Finetune mode: nothing to do."""
        if self.cache is not None:
            self.cache.ensure(texts, device=device, progress=progress)

    @property
    def dim(self) -> int:
        """Token feature dimension D_t."""
        if self.encoder is not None:
            return self.encoder.dim
        if self.cache is None or self.cache.dim is None:
            raise ConfigError("text side: frozen cache is empty; call prepare() with the captions first")
        return self.cache.dim

    def forward(self, texts: list[str], device: torch.device | str = "cpu") -> TextBatch:
        if self.encoder is not None:
            tok = self.encoder(texts)
            return TextBatch(tokens=tok.features, mask=tok.mask)
        if self.cache is None:
            raise ConfigError("text side: neither a text encoder nor a frozen cache")
        return self.cache.batch(texts).to(device)
