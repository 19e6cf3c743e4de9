"""Training loop: a short end-to-end run beats chance, resume after a kill equals an uninterrupted run, config
validation errors name the key."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import pipeline  # noqa: F401
from data_manifest.schema import VideoRecord
from pipeline.errors import ConfigError
from pipeline.runs.evaluate import evaluate_run
from pipeline.runs.folder import build_context, lock_run_folder, resolve_feature_dirs
from pipeline.training.config import TrainConfig, load_config
from pipeline.training.loop import SELECTION_ON_TEST, holdout_ids, selection_sets, train
from tests.train_fixtures import make_dataset_tree
from workflows.cli import main

pytestmark = pytest.mark.slow

SMALL_T2VLAD = {"dim": 32, "num_clusters": 4, "ff_dim": 64, "margin": 0.2}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    manifest, features, records = make_dataset_tree(tmp, {"train": 16, "val": 8, "test": 8})
    return tmp, manifest, features


def small_config(tmp, **changes):
    base = {
        "head": "t2vlad",
        "epochs": 3,
        "batch_size": 8,
        "device": "cpu",
        "head_options": SMALL_T2VLAD,
        "optim": {"name": "adam", "lr": 3e-3},
        "text": {"cache_dir": str(tmp / "text-cache")},
    }
    base.update(changes)
    return TrainConfig.parse(base, "test")


def test_short_training_run_beats_chance_and_writes_its_files(tree):
    tmp, manifest, features = tree
    run = tmp / "run-e2e"
    result = train(small_config(tmp), manifest, features, run, progress=False)
    assert result.epochs_done == 3 and result.resumed_from == 0 and 1 <= result.best_epoch <= 3
    for name in (
        "config.json",
        "last.pt",
        "best.pt",
        "curves.jsonl",
        "curves.png",
        "provenance.json",
        "result.json",
    ):
        assert (run / name).is_file(), name
    curves = [json.loads(line) for line in (run / "curves.jsonl").read_text().splitlines()]
    assert [c["epoch"] for c in curves] == [1, 2, 3]
    assert curves[-1]["train_loss"] < curves[0]["train_loss"]
    prov = json.loads((run / "provenance.json").read_text())
    assert set(prov["feature_fingerprints"]) == {"appearance", "motion", "speech"} and prov["seed"] == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["selection"] == "val" and saved["config"]["experts"] == ["appearance", "motion", "speech"]

    metrics = evaluate_run(run, split="train", progress=False)["metrics"]
    chance = 100 / 16
    assert metrics["t2v"]["R1"] > 4 * chance, metrics
    assert (run / "metrics-train.json").is_file()


def test_resume_after_kill_equals_uninterrupted_run(tree):
    tmp, manifest, features = tree
    config = small_config(tmp, epochs=2, optim={"name": "ranger", "lr": 3e-3}, max_rows=4)
    full = train(config, manifest, features, tmp / "run-full", progress=False)
    first = train(config.replace(epochs=1), manifest, features, tmp / "run-resumed", progress=False)
    assert first.epochs_done == 1
    resumed = train(config, manifest, features, tmp / "run-resumed", progress=False)
    assert resumed.resumed_from == 1 and resumed.epochs_done == 2
    a = torch.load(tmp / "run-full" / "last.pt", weights_only=True)
    b = torch.load(tmp / "run-resumed" / "last.pt", weights_only=True)
    assert a["head"].keys() == b["head"].keys()
    for key in a["head"]:
        assert torch.equal(a["head"][key], b["head"][key]), key
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert full.best_epoch == resumed.best_epoch

    again = train(config, manifest, features, tmp / "run-resumed", progress=False)  # nothing left to do
    assert again.resumed_from == 2 and again.epochs_done == 2
    changed = config.replace(head_options={**SMALL_T2VLAD, "margin": 0.1})
    with pytest.raises(ConfigError, match="different config"):
        train(changed, manifest, features, tmp / "run-resumed", progress=False)


def test_holdout_ids_are_the_first_sha256_digests_whatever_the_order():
    records = [
        VideoRecord(video_id=f"v{i}", path=f"v{i}.mp4", split="train", captions=["c"]) for i in range(100)
    ]
    records.append(VideoRecord(video_id="uncaptioned", path="u.mp4", split="train", captions=[]))
    records.append(VideoRecord(video_id="t0", path="t.mp4", split="test", captions=["c"]))
    digests = sorted((hashlib.sha256(f"v{i}".encode()).hexdigest(), f"v{i}") for i in range(100))
    assert holdout_ids(records, 0.05, 2) == [v for _, v in digests[:5]]
    assert holdout_ids(records[::-1], 0.05, 2) == holdout_ids(records, 0.05, 2)
    assert len(holdout_ids(records, 0.05, 20)) == 20  # at least holdout_min
    assert len(holdout_ids(records[:10], 0.05, 20)) == 5  # at most half of the training videos


def test_no_val_split_holds_out_training_videos_it_does_not_train_on(tmp_path):
    manifest, features, records = make_dataset_tree(tmp_path, {"train": 12, "test": 4})
    config = small_config(tmp_path, epochs=1, holdout_min=3)
    ctx = build_context(
        config,
        manifest,
        features,
        resolve_feature_dirs(config, features),
        torch.device("cpu"),
        run_dir=tmp_path / "run",
    )
    train_set, val_set, label = selection_sets(ctx)
    held = holdout_ids(records, 0.05, 3)
    assert label == "holdout-3" and val_set.video_ids == [r.video_id for r in records if r.video_id in held]
    assert not set(train_set.video_ids) & set(held) and len(train_set) == 9 and not val_set.train
    train(config, manifest, features, tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["selection"] == "holdout-3"


def test_selection_on_test_is_labelled_in_every_output(tmp_path, capsys):
    manifest, features, _ = make_dataset_tree(tmp_path, {"train": 8, "val": 4, "test": 4})
    run = tmp_path / "run"
    train(small_config(tmp_path, epochs=1, selection="test"), manifest, features, run)
    log = capsys.readouterr().out
    assert SELECTION_ON_TEST in log and "epoch 1/1" in log and "test (selection on the test list)" in log
    for name in ("config.json", "provenance.json", "result.json"):
        assert json.loads((run / name).read_text())["selection"] == SELECTION_ON_TEST, name
    history = json.loads((run / "curves.jsonl").read_text().splitlines()[0])
    assert (
        history["val"]["t2v"]["R1"] == evaluate_run(run, split="test", progress=False)["metrics"]["t2v"]["R1"]
    )
    assert json.loads((run / "metrics-test.json").read_text())["selection"] == SELECTION_ON_TEST
    assert evaluate_run(run, split="val", progress=False)["selection"] == SELECTION_ON_TEST


def test_config_errors_name_the_file_and_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('head = "t2vlad"\nepochz = 3\n')
    with pytest.raises(ConfigError, match=r"bad.toml: epochz: unknown key \(known: batch_size, "):
        load_config(bad)
    bad.write_text("[optim]\nlearning_rate = 1e-3\n")
    with pytest.raises(
        ConfigError, match=r"bad.toml: optim.learning_rate: unknown key \(known: grad_clip, lr, "
    ):
        load_config(bad)
    bad.write_text('batch_size = "big"\n')
    with pytest.raises(
        ConfigError, match=r"bad.toml: batch_size: Input should be a valid integer, got 'big'"
    ):
        load_config(bad)
    bad.write_text('head = "t2vlad"\n[text]\nmode = "thawed"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: text.mode: Input should be 'frozen' or 'finetune'"):
        load_config(bad)
    bad.write_text('head = "vlad"\nepochs = 0\nexperts = ["rgb", "rgb"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(err.value).splitlines() == [
        f"{bad}: head: unknown head 'vlad'; known heads: ['cret', 'mgfi', 't2vlad']",
        f"{bad}: experts: lists an expert twice",
        f"{bad}: epochs: Input should be greater than or equal to 1, got 0",
    ]
    bad.write_text("head = \n")
    with pytest.raises(ConfigError, match=r"invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps({"head": "cret", "epochs": 2, "optim": {"lr": 1}, "head_options": {"dim": 96}})
    )
    config = load_config(good, epochs=5)
    assert config.epochs == 5 and config.optim.lr == 1.0 and config.head == "cret"
    assert config.optim.name == "ranger" and config.optim.lr_decay == 0.9 and config.batch_size == 64
    assert config.text.max_length == 37 and config.text.mode == "frozen"
    assert config.head_options == {"dim": 96}


def test_head_options_are_checked_against_the_head_when_the_config_loads(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('head = "t2vlad"\n[head_options]\nclusters = 3\nnum_clusters = "3"\n')
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{bad}: head_options.num_clusters: Input should be a valid integer, got '3'"
    assert lines[1].startswith(f"{bad}: head_options.clusters: unknown key")
    assert len(lines) == 2
    with pytest.raises(ConfigError, match="head_options.margin: Input should be a valid number"):
        small_config(tmp_path, head_options={"margin": "0.2"})


def test_finetune_mode_updates_the_text_encoder(tmp_path):
    manifest, features, _ = make_dataset_tree(tmp_path, {"train": 8, "val": 4})
    config = small_config(tmp_path, epochs=1, text={"mode": "finetune", "lr": 1e-4})
    train(config, manifest, features, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert state["text"] is not None
    from pipeline.text_encoder import TextEncoder

    original = TextEncoder().state_dict()
    changed = [
        k
        for k, v in state["text"].items()
        if k.startswith("encoder.") and not torch.equal(v, original[k.removeprefix("encoder.")])
    ]
    assert changed, "no text encoder weight changed"
    result = evaluate_run(tmp_path / "run", split="val", progress=False)
    assert result["num_videos"] == 4


def test_second_train_into_a_locked_run_folder_fails_at_once(tree, capsys):
    tmp, manifest, features = tree
    run = tmp / "run-locked"
    run.mkdir()
    config = small_config(tmp, epochs=1)
    with lock_run_folder(run):  # what a first `t2v train` holds while it runs
        with pytest.raises(ConfigError, match=rf"^{run}: another t2v train is writing this run folder"):
            train(config, manifest, features, run, progress=False)
        args = ["train", "--head", "t2vlad", "--manifest", str(manifest), "--features", str(features)]
        assert main([*args, "--out", str(run), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"t2v train: error: {run}: another t2v train") and err.count("\n") == 1
        assert not (run / "last.pt").exists()
    assert train(config, manifest, features, run, progress=False).epochs_done == 1


def test_stages_must_fit_the_head_and_the_epochs():
    with pytest.raises(
        ConfigError, match=r"stages: head 'mgfi' has 2 training stages \['frames_text', 'audio'\]"
    ):
        TrainConfig.parse({"head": "mgfi", "epochs": 3, "stages": [3]}, "test")
    with pytest.raises(ConfigError, match="stages: their epochs add up to 4, not epochs = 3"):
        TrainConfig.parse({"head": "mgfi", "epochs": 3, "stages": [2, 2]}, "test")
    with pytest.raises(ConfigError, match="stages: head 't2vlad' has 0 training stages"):
        TrainConfig.parse({"head": "t2vlad", "epochs": 3, "stages": [3]}, "test")
    config = TrainConfig.parse({"head": "mgfi", "epochs": 5, "stages": [3, 2]}, "test")
    assert [config.stage_of(e) for e in range(1, 6)] == [0, 0, 0, 1, 1]
    assert TrainConfig.parse({}, "test").stage_of(1) is None


def test_mgfi_stage_two_trains_only_the_audio_branch():
    from types import SimpleNamespace

    from pipeline.heads import TextBatch, VideoBatch, build_head
    from pipeline.training.loop import enter_stage

    torch.manual_seed(0)
    head = build_head(
        "mgfi", {"dim": 8, "ff_dim": 8, "audio_expert": "pann"}, {"clip": 6, "pann": 4}, 5
    ).train()
    text_encoder = torch.nn.Linear(5, 5)
    video = VideoBatch(
        {"clip": torch.randn(4, 3, 6), "pann": torch.randn(4, 2, 4)},
        {"clip": torch.ones(4, 3, dtype=torch.bool), "pann": torch.ones(4, 2, dtype=torch.bool)},
        torch.ones(4, 2, dtype=torch.bool),
    )
    text = TextBatch(torch.randn(4, 3, 5), torch.ones(4, 3, dtype=torch.bool))
    ctx = SimpleNamespace(head=head, text_side=text_encoder)
    for stage, trained_prefixes in ((0, None), (1, ("ln_a.", "audio_proj."))):
        enter_stage(ctx, stage)
        head.zero_grad(set_to_none=True)
        text_encoder.zero_grad(set_to_none=True)
        tokens = text_encoder(text.tokens)
        head.loss(head.encode_text(TextBatch(tokens, text.mask)), head.encode_video(video)).backward()
        for name, param in head.named_parameters():
            is_audio = name.startswith(("ln_a.", "audio_proj."))
            if trained_prefixes is None:  # stage 1: frames and text; the audio branch is not in the score
                assert (param.grad is None) == is_audio, name
            else:  # stage 2: everything but the audio branch is fixed
                assert (param.grad is not None and param.grad.abs().sum() > 0) == is_audio, name
        assert (text_encoder.weight.grad is None) == (stage == 1)


def test_staged_training_run_selects_its_best_epoch_in_the_last_stage(tree):
    tmp, manifest, features = tree
    config = small_config(
        tmp,
        head="mgfi",
        epochs=3,
        stages=[2, 1],
        head_options={"dim": 16, "ff_dim": 16, "frame_expert": "appearance", "audio_expert": "speech"},
    )
    result = train(config, manifest, features, tmp / "run-staged", progress=False)
    assert result.epochs_done == 3 and result.best_epoch == 3
