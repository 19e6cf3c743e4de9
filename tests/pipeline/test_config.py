"""The shared config mechanism: one loader for TOML and JSON, strict types, unknown keys rejected, every problem one
``FILE: key.path: problem`` line."""

from __future__ import annotations

import json

import pytest
from pydantic import Field

from pipeline.config import Config, FloatTriple, read_config_file
from pipeline.errors import ConfigError
from pipeline.heads.t2vlad import T2VLADConfig


class Inner(Config):
    rate: float = 0.5
    mean: FloatTriple = (0.0, 0.0, 0.0)


class Outer(Config):
    name: str = "x"
    count: int = Field(1, ge=1)
    inner: Inner = Field(default_factory=Inner)


def _problems(err: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return str(err.value).splitlines()


def test_toml_and_json_files_load_to_the_same_config(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("count = 3\n[inner]\nrate = 1\nmean = [0.5, 0.5, 0.5]\n")
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"count": 3, "inner": {"rate": 1, "mean": [0.5, 0.5, 0.5]}}))
    a, b = Outer.load(toml), Outer.load(js)
    assert (
        a == b and a.inner.rate == 1.0 and isinstance(a.inner.rate, float) and a.inner.mean == (0.5, 0.5, 0.5)
    )
    assert Outer.load(None) == Outer() and Outer.load(toml, count=7, name=None).count == 7


def test_unknown_keys_name_the_file_the_key_path_and_the_known_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("cuont = 3\n[inner]\nrat = 1\n")
    with pytest.raises(ConfigError) as err:
        Outer.load(path)
    assert _problems(err) == [
        f"{path}: inner.rat: unknown key (known: mean, rate)",
        f"{path}: cuont: unknown key (known: count, inner, name)",
    ]


def test_wrong_types_are_not_coerced_and_every_problem_is_one_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('count = "3"\nname = 4\n[inner]\nrate = true\nmean = [1, 2]\n')
    with pytest.raises(ConfigError) as err:
        Outer.load(path)
    assert _problems(err) == [
        f"{path}: name: Input should be a valid string, got 4",
        f"{path}: count: Input should be a valid integer, got '3'",
        f"{path}: inner.rate: Input should be a valid number, got True",
        f"{path}: inner.mean.2: Field required",
    ]


def test_head_option_given_as_a_string_is_a_one_line_error():
    with pytest.raises(ConfigError) as err:
        T2VLADConfig.parse({"num_clusters": "3"}, "t2vlad.toml")
    assert _problems(err) == ["t2vlad.toml: num_clusters: Input should be a valid integer, got '3'"]
    assert err.value.__cause__ is None and err.value.__suppress_context__
    with pytest.raises(ConfigError, match=r"^t2vlad.toml: dim 10 is not divisible by num_heads 4$"):
        T2VLADConfig.parse({"dim": 10}, "t2vlad.toml")
    with pytest.raises(
        ConfigError, match=r"^cfg: num_clusters: Input should be greater than or equal to 1, got 0$"
    ):
        T2VLADConfig.parse({"num_clusters": 0}, "cfg")


def test_bad_files_are_one_line_errors_naming_the_file(tmp_path):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("count = \n")
    with pytest.raises(ConfigError, match=rf"^{bad_toml}: invalid TOML: "):
        read_config_file(bad_toml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"count": 3,}')
    with pytest.raises(ConfigError, match=rf"^{bad_json}: invalid JSON: "):
        read_config_file(bad_json)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=rf"^{listed}: expected a JSON object at the top level, got list$"):
        read_config_file(listed)
    with pytest.raises(ConfigError, match=r"must end in .toml or .json"):
        read_config_file(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"missing.toml: cannot read config"):
        read_config_file(tmp_path / "missing.toml")


def test_replace_validates_the_changes():
    config = Outer(count=2)
    assert config.replace(name="y") == Outer(name="y", count=2)
    with pytest.raises(
        ConfigError, match=r"^Outer: count: Input should be greater than or equal to 1, got 0$"
    ):
        config.replace(count=0)
