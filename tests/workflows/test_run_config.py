"""``t2v run`` configuration: the demo file loads, every bad key is a ``FILE: key: problem`` line reported before
anything runs, and ``[store] split`` chooses the videos the store encodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from workflows.cli import main
from workflows.run_all import pipeline_tasks
from workflows.run_config import load_run_config

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_demo_config_loads(monkeypatch):
    monkeypatch.chdir(REPO)  # its paths are relative to the repository root
    cfg = load_run_config("configs/demo.toml")
    assert cfg.out_dir == Path("demo-output") and cfg.sample is not None and cfg.sample.n == 300
    assert cfg.manifest_path == Path("demo-output/sample/manifest.jsonl")
    assert cfg.extract.experts == ["rgb", "audio_stats", "ocr", "speech"] and cfg.extract.workers == 2
    assert sorted(cfg.train.heads) == ["cret", "mgfi", "t2vlad"] and cfg.train.ablation
    assert cfg.head_config_path("t2vlad") == Path("configs/sample/t2vlad.toml")
    assert cfg.store.head == "t2vlad" and cfg.store_split == "test" and cfg.search.k == 5
    assert len(cfg.search.queries) == 3


def test_unknown_sections_keys_and_bad_values_are_all_reported(tmp_path):
    path = _write(
        tmp_path / "run.toml",
        'manifest = "m.jsonl"\n'
        '[extract]\nexperts = ["rgb"]\nshard_size = "64"\n'
        "[extract.options.rgb]\nfpz = 2.0\n"
        '[stor]\nhead = "t2vlad"\n'
        '[search]\nqueries = ["a"]\nk = 5\ntop = 3\n',
    )
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert str(err.value).splitlines() == [
        f"{path}: extract.shard_size: Input should be a valid integer, got '64'",
        f"{path}: extract.options.rgb.fpz: unknown key",
        f"{path}: search.top: unknown key (known: k, queries)",
        f"{path}: stor: unknown key (known: extract, manifest, out, sample, search, store, train)",
    ]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('[extract]\nexperts = ["rgb"]\n', "give `manifest = ...` or a [sample] section"),
        (
            'manifest = "m.jsonl"\n[extract]\nexperts = []\n',
            "extract.experts: List should have at least 1 item",
        ),
        ('manifest = "m.jsonl"\n', "extract: Field required"),
        (
            'manifest = "m.jsonl"\n[extract]\nexperts = ["rgb"]\n[extract.options.nope]\nfps = 1.0\n',
            "extract.options: unknown expert 'nope'",
        ),
        (
            'manifest = "m.jsonl"\n[extract]\nexperts = ["rgb"]\n[extract.options.ocr]\nfps = 1.0\n',
            "extract: options given for experts not in experts: ['ocr']",
        ),
        (
            'manifest = "m.jsonl"\n[extract]\nexperts = ["rgb"]\n[train]\nheads = { vlad = "" }\n',
            "train.heads: unknown head 'vlad'",
        ),
        (
            'manifest = "m.jsonl"\n[extract]\nexperts = ["rgb"]\n[train]\nheads = { cret = "" }\n'
            '[store]\nhead = "t2vlad"\n',
            "[store] head 't2vlad' is not one of [train] heads ['cret']",
        ),
    ],
)
def test_each_inconsistency_is_a_config_error_naming_the_file(tmp_path, body, problem):
    path = _write(tmp_path / "run.toml", body)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert str(err.value).startswith(f"{path}: ") and problem in str(err.value)


def test_head_training_configs_are_checked_when_the_run_file_loads(tmp_path):
    head_cfg = _write(tmp_path / "t2vlad.toml", '[head_options]\nnum_clusters = "3"\n[optim]\nlr = -1.0\n')
    path = _write(
        tmp_path / "run.toml",
        f'manifest = "m.jsonl"\n[extract]\nexperts = ["rgb"]\n[train]\nheads = {{ t2vlad = "{head_cfg}" }}\n',
    )
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert str(err.value).splitlines() == [
        f"{head_cfg}: head_options.num_clusters: Input should be a valid integer, got '3'",
        f"{head_cfg}: optim.lr: Input should be greater than 0, got -1.0",
    ]


@pytest.mark.parametrize(("store_split", "expected"), [("", "val"), ('split = "test"\n', "test")])
def test_store_split_chooses_the_videos_of_the_store_and_report(tmp_path, store_split, expected):
    path = _write(
        tmp_path / "run.toml",
        f'out = "{tmp_path / "out"}"\nmanifest = "m.jsonl"\n[extract]\nexperts = ["rgb"]\n'
        f'[train]\nheads = {{ t2vlad = "" }}\nsplit = "val"\n[store]\nhead = "t2vlad"\n{store_split}',
    )
    tasks = pipeline_tasks(load_run_config(path))
    assert tasks["evaluate:t2vlad"].split == "val"
    assert tasks["store"].split == expected and tasks["report"].split == expected


def test_t2v_run_reports_every_problem_before_generating_anything(tmp_path, capsys):
    out = tmp_path / "out"
    path = _write(
        tmp_path / "run.toml",
        f'out = "{out}"\n[sample]\nn = 0\n[extract]\nexperts = ["rgb"]\n[extract.options.rgb]\nfps = "2"\n',
    )
    assert main(["run", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"t2v run: error: {path}: sample.n: Input should be greater than or equal to 1, got 0",
        f"{path}: extract.options.rgb.fps: Input should be a valid number, got '2'",
    ]
    assert "Traceback" not in err and not out.exists()
