"""Sentence vectors of the text side: a frozen encoder's own pooling, [CLS] only when the model pools that way."""

import json

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.heads import TextBatch, build_head
from pipeline.text_encoder import default_text_model_dir, encoder_pooling
from pipeline.training.text_cache import FrozenTextCache, frozen_text_batch

UNRELATED = [
    "a man is cooking pasta in a kitchen",
    "the stock market fell sharply on monday",
    "two cats play with a red ball of yarn",
    "rain falls on a quiet mountain village",
    "a guitarist performs on a crowded stage",
    "instructions for assembling a wooden shelf",
]


def test_encoder_pooling_from_the_model_folder(tmp_path):
    assert (
        encoder_pooling(default_text_model_dir()) == "mean"
    )  # all-MiniLM-L6-v2 was trained with mean pooling
    assert encoder_pooling(tmp_path) == "cls"  # plain transformers folder (BERT): the [CLS] state
    pooling = tmp_path / "1_Pooling"
    pooling.mkdir()
    (pooling / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert encoder_pooling(tmp_path) == "cls"
    (pooling / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(ConfigError, match="unsupported sentence pooling"):
        encoder_pooling(tmp_path)


def test_frozen_batch_sentence_is_the_mean_of_real_tokens_only():
    tokens = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [1e4, 1e4]], [[2.0, 4.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    batch = frozen_text_batch(tokens, mask, "mean")
    torch.testing.assert_close(batch.cls, torch.tensor([[2.0, 1.0], [2.0, 4.0]]))
    torch.testing.assert_close(frozen_text_batch(tokens, mask, "cls").cls, tokens[:, 0])


def test_frozen_cache_gives_mean_pooled_sentence_vectors_that_separate_unrelated_captions(tmp_path):
    cache = FrozenTextCache(tmp_path)
    cache.ensure(UNRELATED)
    batch = FrozenTextCache(tmp_path).batch(
        UNRELATED
    )  # reloaded from disk: the mean comes from cached tokens

    def mean_off_diagonal_cosine(vectors):
        unit = torch.nn.functional.normalize(vectors, dim=-1)
        cos = (unit @ unit.t()).numpy()
        return cos[~np.eye(len(UNRELATED), dtype=bool)].mean()

    pooled, first = mean_off_diagonal_cosine(batch.cls), mean_off_diagonal_cosine(batch.tokens[:, 0])
    assert pooled < 0.15, pooled
    assert first > pooled + 0.2, (first, pooled)


@pytest.mark.parametrize(
    ("head", "options"),
    [("t2vlad", {"variant": "no_local", "dim": 8}), ("cret", {"dim": 8, "num_centers": 2, "num_heads": 2})],
)
def test_heads_take_the_supplied_sentence_vector_else_the_cls_token(head, options):
    torch.manual_seed(0)
    h = build_head(head, options, {"rgb": 4}, 3).eval()
    tokens, mask = torch.randn(2, 4, 3), torch.ones(2, 4, dtype=torch.bool)
    field = "experts" if head == "t2vlad" else "sentence"
    frozen = getattr(h.encode_text(frozen_text_batch(tokens, mask, "mean")), field)
    finetuned = getattr(h.encode_text(TextBatch(tokens=tokens, mask=mask)), field)  # no sentence vector
    as_cls = getattr(h.encode_text(frozen_text_batch(tokens, mask, "cls")), field)
    assert not torch.allclose(frozen, finetuned)
    torch.testing.assert_close(finetuned, as_cls)
