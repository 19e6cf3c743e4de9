"""Evaluation of trained runs (blocked similarity, metrics file), the train/evaluate/ablation commands and the
Luigi tasks TrainHead / EvaluateHead / AblationTable on features prepared directly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pipeline  # noqa: F401
from data_manifest.errors import T2VError
from pipeline.heads import head_class
from pipeline.metrics import retrieval_metrics
from pipeline.runs.ablation import ablation_markdown, ablation_rows, load_ablation
from pipeline.runs.evaluate import evaluate_run, format_metrics_table, similarity_matrix
from pipeline.runs.folder import load_run
from pipeline.training.dataset import make_loader
from tests.store_fixtures import make_tree, save_run
from tests.train_fixtures import make_dataset_tree
from workflows.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    manifest, features, _ = make_dataset_tree(tmp, {"train": 12, "val": 4, "test": 8})
    config = tmp / "small.toml"
    config.write_text(
        'epochs = 2\nbatch_size = 6\ndevice = "cpu"\n'
        "[head_options]\ndim = 32\nnum_clusters = 4\nff_dim = 64\nmargin = 0.2\n"
        f'[optim]\nname = "adam"\nlr = 3e-3\n[text]\ncache_dir = "{tmp / "text-cache"}"\n'
    )
    run = tmp / "run"
    rc = main(
        [
            "train",
            "--head",
            "t2vlad",
            "--manifest",
            str(manifest),
            "--config",
            str(config),
            "--features",
            str(features),
            "--out",
            str(run),
            "--quiet",
        ]
    )
    assert rc == 0
    return tmp, manifest, features, config, run


def test_blocked_similarity_equals_one_block(trained):
    _, _, _, _, run = trained
    ctx = load_run(run)
    ds = ctx.dataset("test")
    texts, cols = ds.queries()
    one = similarity_matrix(ctx.head, ctx.text_side, ds, texts, batch_size=1000)
    blocks = similarity_matrix(ctx.head, ctx.text_side, ds, texts, batch_size=3)
    assert one.shape == (len(texts), len(ds)) == (24, 8)
    np.testing.assert_allclose(blocks, one, rtol=1e-5, atol=1e-5)
    result = evaluate_run(run, split="test", progress=False)
    assert result["num_texts"] == 24 and result["num_videos"] == 8 and result["epoch"] >= 1
    expected = retrieval_metrics(one, cols)
    assert result["metrics"]["t2v"]["R1"] == pytest.approx(expected["t2v"]["R1"])
    saved = json.loads((run / "metrics-test.json").read_text())
    assert saved["metrics"] == result["metrics"]
    table = format_metrics_table(result["metrics"])
    assert table.splitlines()[0].split() == ["R@1", "R@5", "R@10", "R@50", "MdR", "MnR", "GM"]


def test_evaluate_command_json_and_errors(trained, capsys):
    _, manifest, features, _, run = trained
    assert main(["evaluate", str(run), "--split", "val", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "val" and set(out["metrics"]) == {"t2v", "v2t"}
    assert (
        main(
            [
                "evaluate",
                str(run),
                "--split",
                "test",
                "--manifest",
                str(manifest),
                "--features",
                str(features),
            ]
        )
        == 0
    )
    assert "t2v" in capsys.readouterr().out
    assert main(["evaluate", str(run / "nope")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("t2v evaluate: error:") and "run folder not found" in err and "\n" not in err
    assert main(["evaluate", str(run), "--split", "unlabelled"]) == 1
    assert "no captioned videos" in capsys.readouterr().err
    with pytest.raises(T2VError, match="missing"):
        evaluate_run(run, checkpoint="other.pt")


def test_evaluate_branches_scores_one_branch_of_the_full_run(trained, capsys):
    _, _, _, _, run = trained
    ctx = load_run(run)
    ds = ctx.dataset("test")
    texts, cols = ds.queries()
    ctx.text_side.prepare(texts, progress=False)
    ctx.text_side.eval()
    ctx.head.eval()
    with torch.no_grad():
        t_emb = ctx.head.encode_text(ctx.text_side(texts))
        v_emb = ctx.head.encode_video(next(iter(make_loader(ds, len(ds), False))).video)
    for branches, part in (("local", ctx.head.local_similarity), ("global", ctx.head.global_similarity)):
        assert main(["evaluate", str(run), "--branches", branches, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        expected = retrieval_metrics(part(t_emb, v_emb).numpy(), cols)
        assert out["branches"] == branches
        assert out["metrics"]["t2v"]["MnR"] == pytest.approx(expected["t2v"]["MnR"])
        assert out["metrics"]["v2t"]["MnR"] == pytest.approx(expected["v2t"]["MnR"])
        assert (
            json.loads((run / f"metrics-test-{branches}-only.json").read_text())["metrics"] == out["metrics"]
        )
    assert json.loads((run / "metrics-test.json").read_text())["branches"] == "both"


def test_evaluate_branches_on_another_head_is_one_line(tmp_path, capsys):
    manifest, features, _ = make_tree(tmp_path)
    run = save_run(tmp_path / "run-cret", "cret", manifest, features)
    assert main(["evaluate", str(run), "--branches", "local"]) == 1
    err = capsys.readouterr().err.strip()
    assert "a cret run takes only both" in err and "\n" not in err


def test_train_command_bad_input_is_one_line(trained, capsys, tmp_path):
    tmp, manifest, features, _, _ = trained
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 1\nwarmup = 3\n")
    assert (
        main(["train", "--manifest", str(manifest), "--config", str(bad), "--out", str(tmp_path / "r")]) == 1
    )
    err = capsys.readouterr().err.strip()
    assert f"{bad}: warmup: unknown key" in err and "\n" not in err
    assert main(["train", "--manifest", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "r")]) == 1
    assert "manifest not found" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--manifest",
                str(manifest),
                "--features",
                str(tmp_path / "nofeatures"),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 1
    )
    assert "features folder does not exist" in capsys.readouterr().err


def test_luigi_train_evaluate_and_incremental_rerun(trained):
    import luigi

    from workflows.tasks_train import EvaluateHead, TrainHead

    tmp, manifest, features, config, _ = trained
    params = dict(
        head="t2vlad",
        manifest=manifest,
        features_root=features,
        out_root=tmp / "runs",
        config_path=config,
        device="cpu",
    )
    evaluate = EvaluateHead(split="test", **params)
    assert luigi.build([evaluate], local_scheduler=True, workers=1)
    train_task = TrainHead(**params)
    assert train_task.complete() and train_task.best_checkpoint().is_file()
    assert json.loads(open(evaluate.output().path).read())["split"] == "test"
    mtime = (train_task.run_dir() / "result.json").stat().st_mtime
    assert luigi.build([EvaluateHead(split="test", **params)], local_scheduler=True, workers=1)
    assert (train_task.run_dir() / "result.json").stat().st_mtime == mtime  # nothing retrained
    # infrastructure parameters do not change the run; the config does
    assert TrainHead(**{**params, "device": "auto"}).run_dir() == train_task.run_dir()
    other = tmp / "other.toml"
    other.write_text(config.read_text().replace("margin = 0.2", "margin = 0.1"))
    assert TrainHead(**{**params, "config_path": other}).run_dir() != train_task.run_dir()


def test_ablation_table(trained, capsys):
    tmp, manifest, features, config, _ = trained
    out = tmp / "ablation"
    rc = main(
        [
            "ablation",
            "--manifest",
            str(manifest),
            "--features",
            str(features),
            "--out",
            str(out),
            "--config",
            str(config),
            "--epochs",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    text = (out / "ablation.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert [r.split("|")[1].strip() for r in rows] == list(ablation_rows(head_class("t2vlad")))
    full_runs = list((out / "runs" / "t2vlad").glob("full-*"))
    assert len(full_runs) == 1  # the test-time rows score the full run, nothing more is trained for them
    assert {p.name for p in full_runs[0].glob("metrics-*.json")} == {
        "metrics-test.json",
        "metrics-test-local-only.json",
        "metrics-test-global-only.json",
    }
    assert len(list((out / "runs" / "t2vlad").glob("trained_local_only-*"))) == 1
    assert "t2v R@1" in text and text in capsys.readouterr().out
    title, results = load_ablation(out / "ablation.json")
    assert list(results) == list(ablation_rows(head_class("t2vlad"))) and title in text


def test_ablation_markdown_format():
    m = {
        "t2v": {"R1": 12.345, "R5": 40, "R10": 60, "MdR": 3},
        "v2t": {"R1": 10, "R5": 30, "R10": 50, "MdR": 5.5},
    }
    text = ablation_markdown({"full": m}, title="x")
    assert "| full | 12.3 | 40.0 | 60.0 | 3.0 | 10.0 | 30.0 | 50.0 | 5.5 |" in text


def test_reloaded_run_scores_like_training_whatever_the_expert_order(tmp_path):
    """config.json is written with sorted keys; a head trained with experts in another order must be rebuilt in
    that order (T2VLAD's expert weights are positional), so evaluating best.pt reproduces training's val score."""
    manifest, features, _ = make_dataset_tree(tmp_path, {"train": 12, "val": 6})
    config = tmp_path / "order.toml"
    config.write_text(
        'experts = ["speech", "appearance", "motion"]\nepochs = 2\nbatch_size = 6\ndevice = "cpu"\n'
        "[head_options]\ndim = 32\nnum_clusters = 4\nff_dim = 64\nmargin = 0.2\n"
        f'[optim]\nname = "adam"\nlr = 3e-3\n[text]\ncache_dir = "{tmp_path / "text-cache"}"\n'
    )
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--manifest",
                str(manifest),
                "--config",
                str(config),
                "--features",
                str(features),
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    best = json.loads((run / "result.json").read_text())["best_metrics"]
    again = evaluate_run(run, split="val", progress=False)["metrics"]
    for direction in ("t2v", "v2t"):
        for key, value in best[direction].items():
            assert again[direction][key] == pytest.approx(value, abs=1e-6), (direction, key)


def test_checkpoint_of_another_layout_is_one_line(tmp_path, capsys):
    manifest, features, _ = make_tree(tmp_path)
    run = save_run(tmp_path / "run-old", "t2vlad", manifest, features)
    saved = json.loads((run / "config.json").read_text())
    saved["config"]["head_options"] = {**saved["config"]["head_options"], "vlad_input_norm": "none"}
    (run / "config.json").write_text(
        json.dumps(saved)
    )  # the weights hold a LayerNorm the config does not build
    assert main(["evaluate", str(run), "--split", "test"]) == 1
    err = capsys.readouterr().err.strip()
    assert "weights do not fit the head" in err and "best.pt" in err and "\n" not in err
