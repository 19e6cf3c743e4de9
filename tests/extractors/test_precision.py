"""Model precision (CUDA autocast) is an option of the torch experts: in the fingerprint unless at its default, and
refused on CPU; host arrays reach the device through one helper."""

from __future__ import annotations

import numpy as np
import pytest

from extractors.base import to_device
from extractors.registry import get_expert
from pipeline.errors import ConfigError


@pytest.mark.parametrize("name", ["rgb", "s3d", "clip", "cait", "scene"])
def test_precision_changes_the_fingerprint_only_off_its_default(name: str) -> None:
    default = get_expert(name)
    assert "precision" not in default.config_dict()
    assert get_expert(name, {"precision": "float32"}).config_dict() == default.config_dict()
    half = get_expert(name, {"precision": "float16"})
    assert half.config_dict()["precision"] == "float16"
    assert half.config_dict() != default.config_dict()


def test_precision_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="precision must be one of"):
        get_expert("rgb", {"precision": "fp8"})


def test_autocast_on_cpu_is_refused_at_load() -> None:
    expert = get_expert("rgb", {**get_expert("rgb").smoke_config, "precision": "bfloat16"})
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        expert.load("cpu", random_init=True)
    assert not expert.loaded


def test_to_device_on_cpu_shares_the_array() -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    tensor = to_device(array, "cpu")
    array[0, 0] = 99
    assert int(tensor[0, 0]) == 99
