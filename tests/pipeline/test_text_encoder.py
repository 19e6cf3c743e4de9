"""Text encoder input bounds: texts are cut before tokenising, without changing the tokens of ordinary text."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pipeline.text_encoder import CHARS_PER_TOKEN, TextEncoder


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(max_length=37)


class _Spy:
    """Wraps a tokenizer and records the lengths of the texts it is given."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.lengths: list[int] = []

    def __call__(self, texts: list[str], **kwargs: Any) -> Any:
        self.lengths += [len(t) for t in texts]
        return self.tokenizer(texts, **kwargs)


def test_a_huge_caption_reaches_the_tokenizer_cut(
    encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(encoder.tokenizer)
    monkeypatch.setattr(encoder, "tokenizer", spy)
    huge = "a dog runs across the green field " * 300_000  # 10 MB
    ids = encoder.tokenize([huge, "a cat"])["input_ids"]
    assert spy.lengths == [37 * CHARS_PER_TOKEN, 5]
    assert ids.shape == (2, 37)


def test_cutting_keeps_the_tokens_of_ordinary_text(encoder: TextEncoder) -> None:
    long = "a person is slicing tomatoes on a wooden board in a bright kitchen, " * 800
    full = encoder.tokenizer([long], truncation=True, max_length=37, return_tensors="pt")["input_ids"]
    assert torch.equal(encoder.tokenize([long])["input_ids"], full)
