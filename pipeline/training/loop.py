"""Training loop: seeded, CPU or CUDA, a checkpoint per epoch, best by validation, resumable after a kill.

``train(config, manifest, features_root, run_dir)`` writes into ``run_dir``:

- ``config.json``: the config (experts resolved), manifest, feature folders, dims (``pipeline.runs.record``);
- ``last.pt`` every epoch (model, optimizer, scheduler, RNG states of torch / numpy / random, epoch, history,
  best so far) and ``best.pt`` when the validation score improves, both saved atomically (temp file + rename;
  ``best.pt`` before ``last.pt``, so a kill between the two only repeats that epoch);
- ``curves.jsonl`` + ``curves.png`` (``pipeline.training.curves``), ``provenance.json`` (package versions, feature
  fingerprints, seed, elapsed) and, once all epochs are done, ``result.json``.

Model selection: the geometric mean of text-to-video R@1/5/10 on the validation videos (``config.selection``):

- ``"val"`` (default): the manifest's ``val`` split; a manifest without one (MSR-VTT 1k-A) holds out a fixed subset of
  its training videos, which are then not trained on: the ``ceil(holdout_fraction · N)`` captioned training videos
  (at least ``holdout_min``, at most half) whose ``sha256(video_id)`` hex digests sort first — the same videos
  whatever the manifest's order or the seed. Recorded as ``"holdout-<n>"``.
- ``"test"``: the ``test`` split, as the reference codebases do; the reported test metrics are then not held-out
  results, and every output says so (``SELECTION_ON_TEST`` in ``config.json``, ``provenance.json``, ``result.json``,
  the per-epoch log lines and the metrics files of ``t2v evaluate``).

``config.json`` records which was used (``"selection"``).

Training stages (``config.stages``, e.g. MGFI's frames-and-text then audio schedule): each epoch belongs to one stage
(``TrainConfig.stage_of``); ``enter_stage`` tells the head (``set_training_stage``) and trains only the head's
``stage_parameters`` of that stage (the others get no gradient); a fine-tuned text encoder trains in the first stage
only. ``best.pt`` is chosen among the last stage's epochs, the model every later command uses.

Resume: when ``last.pt`` exists and its run hash (config without ``epochs``/``device``, feature fingerprints,
text model, the manifest's train/val ids and captions, test ones too when selecting on test) matches, training
continues after its epoch; with the same seed the result is identical to an uninterrupted run (row / caption
sampling and shuffling are seeded per epoch, the global RNG states are restored). A different hash is a ConfigError: use a new run folder.
"""

from __future__ import annotations

import hashlib
import math
import platform
import random
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_manifest.errors import T2VError
from data_manifest.schema import VideoRecord
from pipeline.errors import ConfigError
from pipeline.features.fingerprint import canonical_json
from pipeline.runs.evaluate import evaluate_dataset
from pipeline.runs.folder import RunContext, build_context, lock_run_folder, pick_device, resolve_feature_dirs
from pipeline.runs.record import BEST, LAST, RunFolder, SavedRun, write_json
from pipeline.training.config import TrainConfig
from pipeline.training.curves import write_curves
from pipeline.training.dataset import RetrievalDataset, make_loader, row_caps

PACKAGES = ("torch", "numpy", "h5py", "transformers", "pytorch-ranger", "t2v")
SELECTION_ON_TEST = (
    "test (checkpoint selected on the test list, as the reference code: not a held-out result)"
)


@dataclass
class RunResult:
    """Outcome of ``train``: where, how far, which epoch was best (score = val t2v geometric mean, %)."""

    run_dir: Path
    epochs_done: int
    best_epoch: int
    best_score: float
    best_metrics: dict[str, Any]
    resumed_from: int
    elapsed_s: float


def rng_states() -> dict[str, Any]:
    """Global RNG states in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "random": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of ``rng_states``."""
    torch.set_rng_state(states["torch"].cpu())
    n = states["numpy"]
    np.random.set_state((n["kind"], np.array(n["keys"], np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(states["random"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def data_splits(config: TrainConfig) -> tuple[str, ...]:
    """The manifest splits a run's result depends on: train and val, plus test when it selects on test."""
    return ("train", "val", "test") if config.selection == "test" else ("train", "val")


def run_hash(config: TrainConfig, ctx: RunContext) -> str:
    """What a checkpoint must match to be resumed (see module docstring)."""
    splits = data_splits(config)
    data = [(r.video_id, r.split, r.captions) for r in ctx.records if r.split in splits]
    parts = {
        "config": config.resume_hash(),
        "features": {e: d.name for e, d in ctx.feature_dirs.items()},
        "text": ctx.text_side.model_digest,
        "data": hashlib.sha256(canonical_json(data).encode()).hexdigest(),
    }
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()


def make_optimizer(config: TrainConfig, ctx: RunContext) -> torch.optim.Optimizer:
    """Ranger (papers) / Adam / AdamW over the head (``optim.lr``) and a fine-tuned text encoder (``text.lr``)."""
    groups = [{"params": [p for p in ctx.head.parameters() if p.requires_grad], "lr": config.optim.lr}]
    text_params = [p for p in ctx.text_side.parameters() if p.requires_grad]
    if text_params:
        groups.append({"params": text_params, "lr": config.text.lr})
    wd = config.optim.weight_decay
    if config.optim.name == "ranger":
        from pytorch_ranger import Ranger

        return Ranger(groups, lr=config.optim.lr, weight_decay=wd)
    cls = torch.optim.Adam if config.optim.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.optim.lr, weight_decay=wd)


def holdout_ids(records: list[VideoRecord], fraction: float, minimum: int) -> list[str]:
    """Training videos held out for validation: the ``max(minimum, ceil(fraction · N))`` (at most N // 2) captioned
    ``train`` videos whose ``sha256(video_id)`` hex digests sort first, in that order."""
    ids = sorted(
        (r.video_id for r in records if r.split == "train" and r.captions),
        key=lambda v: hashlib.sha256(v.encode("utf-8")).hexdigest(),
    )
    return ids[: min(max(minimum, math.ceil(fraction * len(ids))), len(ids) // 2)]


def selection_sets(ctx: RunContext) -> tuple[RetrievalDataset, RetrievalDataset, str]:
    """(training videos, validation videos, label) for ``ctx.config.selection`` (see the module docstring)."""
    config = ctx.config
    train_set = ctx.dataset("train", train=True)
    if config.selection == "test":
        return train_set, ctx.dataset("test"), SELECTION_ON_TEST
    val = ctx.dataset("val")
    if len(val) >= 2:
        return train_set, val, "val"
    held = set(holdout_ids(ctx.records, config.holdout_fraction, config.holdout_min))
    if len(held) < 2:
        raise T2VError(
            f"{ctx.manifest_path}: no val split and {len(train_set)} training videos, too few to hold out "
            'validation videos; add a val split or set selection = "test"'
        )

    def subset(keep: bool, train: bool) -> RetrievalDataset:
        records = [r for r in ctx.records if r.split == "train" and (r.video_id in held) == keep]
        ds = RetrievalDataset(
            records,
            ctx.readers,
            max_rows=row_caps(config, ctx.readers),
            split="train",
            train=train,
            seed=config.seed,
        )
        ds.require_extracted()
        return ds

    return subset(False, True), subset(True, False), f"holdout-{len(held)}"


def enter_stage(ctx: RunContext, stage: int | None) -> None:
    """Set the head's training stage and freeze what that stage does not train (see the module docstring)."""
    ctx.head.set_training_stage(stage)
    if stage is None:
        return
    trained = ctx.head.stage_parameters(stage)
    if not trained:
        name = ctx.head.training_stages[stage]
        raise ConfigError(f"{ctx.head.name}: training stage {name!r} has nothing to train with these experts")
    for name, param in ctx.head.named_parameters():
        param.requires_grad_(name in trained)
    if stage > 0:
        for param in ctx.text_side.parameters():
            param.requires_grad_(False)


def _train_epoch(ctx: RunContext, dataset: RetrievalDataset, optimizer, epoch: int, progress: bool) -> float:
    """One pass over the training videos (one caption each); returns the mean loss."""
    from tqdm import tqdm

    config = ctx.config
    dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    loader = make_loader(dataset, config.batch_size, shuffle=True, generator=generator)
    ctx.head.train()
    ctx.text_side.train()
    losses = []
    bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False, disable=not progress)
    for batch in bar:
        if len(batch.video_ids) < 2:
            continue  # a ranking / contrastive loss needs negatives
        batch = batch.to(ctx.device)
        text_emb = ctx.head.encode_text(ctx.text_side(batch.captions, device=ctx.device))
        loss = ctx.head.loss(text_emb, ctx.head.encode_video(batch.video))
        if not torch.isfinite(loss):
            raise T2VError(f"epoch {epoch}: loss is {loss.item()} (lower optim.lr or check the features)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.optim.grad_clip > 0:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pytorch-ranger uses deprecated addcmul_ overloads
            optimizer.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return float(np.mean(losses)) if losses else float("nan")


def _provenance(config: TrainConfig, ctx: RunContext, elapsed: float, selection: str) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "packages": versions,
        "python": platform.python_version(),
        "feature_fingerprints": {e: d.name for e, d in ctx.feature_dirs.items()},
        "feature_dirs": {e: str(d) for e, d in ctx.feature_dirs.items()},
        "text_model_digest": ctx.text_side.model_digest,
        "seed": config.seed,
        "device": str(ctx.device),
        "selection": selection,
        "elapsed_s": round(elapsed, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def train(
    config: TrainConfig,
    manifest_path: str | Path,
    features_root: str | Path,
    run_dir: str | Path,
    *,
    progress: bool = True,
) -> RunResult:
    """Train ``config.head`` on the manifest's ``train`` split; resume from ``run_dir/last.pt`` when it matches.

    Holds the run folder's lock throughout (a concurrent ``train`` into the same folder is a ConfigError)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with lock_run_folder(run_dir):
        return _train(config, Path(manifest_path).resolve(), Path(features_root).resolve(), run_dir, progress)


def _train(
    config: TrainConfig, manifest_path: Path, features_root: Path, run_dir: Path, progress: bool
) -> RunResult:
    """The body of :func:`train`, run under the folder lock."""
    device = pick_device(config.device)
    feature_dirs = resolve_feature_dirs(config, features_root)
    config = config.replace(experts=list(feature_dirs))
    ctx = build_context(config, manifest_path, features_root, feature_dirs, device, run_dir=run_dir)
    train_set, val_set, selection = selection_sets(ctx)
    if len(train_set) < 2:
        raise T2VError(
            f"{manifest_path}: split 'train' needs at least 2 captioned videos, has {len(train_set)}"
        )
    if len(val_set) < 2:
        raise T2VError(f"{manifest_path}: {selection}: needs at least 2 captioned videos, has {len(val_set)}")
    ctx.text_side.prepare(val_set.queries()[0], device=str(device))
    optimizer = make_optimizer(config, ctx)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.optim.lr_decay_every, config.optim.lr_decay)
    digest = run_hash(config, ctx)

    folder = RunFolder(run_dir)
    history: list[dict[str, Any]] = []
    best = {"epoch": 0, "score": -1.0, "metrics": {}, "stage": None}
    start, elapsed_before = 0, 0.0
    if folder.last.is_file():
        state = folder.load_checkpoint(LAST, device)
        if state.get("run_hash") != digest:
            raise ConfigError(
                f"{folder.last}: checkpoint of a different config, features or training data; "
                "use another --out folder"
            )
        ctx.head.load_state_dict(state["head"])
        if state["text"] is not None:
            ctx.text_side.load_state_dict(state["text"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_states(state["rng"])
        history, best, start = state["history"], state["best"], int(state["epoch"])
        elapsed_before = history[-1]["elapsed_s"] if history else 0.0

    saved = SavedRun(
        config=config,
        manifest=manifest_path,
        features_root=features_root,
        feature_dirs=dict(feature_dirs),
        expert_dims=ctx.extra["expert_dims"],
        text_dim=ctx.extra["text_dim"],
        text_model_digest=ctx.text_side.model_digest,
        selection=selection,
        run_hash=digest,
    )
    folder.write(saved)
    log_label = "test (selection on the test list)" if selection == SELECTION_ON_TEST else selection
    if progress and selection == SELECTION_ON_TEST:
        print(f"selection: {SELECTION_ON_TEST}", flush=True)
    t0 = time.monotonic()
    for epoch in range(start + 1, config.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        stage = config.stage_of(epoch)
        enter_stage(ctx, stage)
        loss = _train_epoch(ctx, train_set, optimizer, epoch, progress)
        scheduler.step()
        metrics = evaluate_dataset(
            ctx.head, ctx.text_side, val_set, batch_size=config.eval_batch_size, device=device
        )
        score = float(metrics["t2v"]["geometric_mean"])
        elapsed = elapsed_before + time.monotonic() - t0
        history.append(
            {"epoch": epoch, "train_loss": loss, "lr": lr, "elapsed_s": round(elapsed, 3), "val": metrics}
        )
        text_state = ctx.text_side.state_dict() if ctx.text_side.encoder is not None else None
        state = {"epoch": epoch, "head": ctx.head.state_dict(), "text": text_state}
        if score > best["score"] or (stage is not None and best["stage"] != stage):
            best = {"epoch": epoch, "score": score, "metrics": metrics, "stage": stage}
            folder.save_checkpoint(state, BEST)
        state.update(
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            rng=rng_states(),
            history=history,
            best=best,
            run_hash=digest,
        )
        folder.save_checkpoint(state, LAST)
        write_curves(history, run_dir)
        if progress:
            print(
                f"epoch {epoch}/{config.epochs}: loss {loss:.4f}  {log_label} t2v R@1 {metrics['t2v']['R1']:.1f} "
                f"GM {score:.2f}{'  (best)' if best['epoch'] == epoch else ''}",
                flush=True,
            )

    elapsed = history[-1]["elapsed_s"] if history else 0.0
    write_json(folder.provenance, _provenance(config, ctx, elapsed, selection))
    result = RunResult(run_dir, len(history), best["epoch"], best["score"], best["metrics"], start, elapsed)
    write_json(folder.result, {**result.__dict__, "run_dir": str(run_dir), "selection": selection})
    return result
