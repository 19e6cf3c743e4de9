"""Training / evaluation data: manifest captions joined with per-expert features from the shard readers.

Every feature of the chosen videos is read into memory once (``FeatureReader.get_many``) when the dataset is built:
the datasets this project trains on are small (the sample dataset is a few MB; MSR-VTT's 10k videos x 8 experts x
30 rows is a few GB in float32), and per-step disk reads would dominate the step time on 2 cores.

Per expert a video keeps at most ``max_rows[e]`` rows (``row_caps``: the config's ``expert_max_rows``, by default the
public T2VLAD port's caps — speech 112, rgb 51, flow/s3d 49, scene/audio 31 — else ``max_rows``, 30):
- training: a random subset of rows, kept in temporal order, drawn anew each epoch (``set_epoch``);
- evaluation: a deterministic uniform subsample ``round(linspace(0, R-1, max_rows[e]))``.
An expert is *unavailable* for a video when the video is absent from that expert's reader, when its status is
not ok (empty: no audio / speech / on-screen text; failed), or when it has no rows. Unavailable experts get an
all-False row mask and ``available[:, e] = False``; padded rows are zeros with mask False. Nothing is zero-filled
without a mask saying so. A video absent from a reader was never extracted: ``require_extracted`` (called by
training and evaluation) turns that into an error instead of a silently weaker score.

Captions: videos without captions are left out (they have nothing to train or to query with). Training samples
one caption per video per step; evaluation turns every caption into a query (``queries()`` gives the flat caption
list and each caption's video column), so no caption slots are padded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from data_manifest.errors import T2VError
from data_manifest.schema import VideoRecord
from pipeline.features.shards import STATUS_OK
from pipeline.heads.base import VideoBatch
from pipeline.training.config import TrainConfig


@dataclass
class VideoSample:
    """One video: per-expert rows (R_e, D_e) float32 (R_e = 0 when unavailable) and a caption (training only)."""

    video_id: str
    index: int
    rows: dict[str, np.ndarray]
    caption: str | None


@dataclass
class Batch:
    """A collated batch: the head's VideoBatch, the captions (training) and the videos' ids and indices."""

    video: VideoBatch
    captions: list[str]
    video_ids: list[str]
    indices: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        """Move the tensors to ``device``."""
        video = self.video.to(device)
        return Batch(video=video, captions=self.captions, video_ids=self.video_ids, indices=self.indices)


def row_caps(config: TrainConfig, experts: Iterable[str]) -> dict[str, int]:
    """Rows kept per video for each of ``experts``: ``config.expert_max_rows[e]``, else ``config.max_rows``."""
    return {e: int(config.expert_max_rows.get(e, config.max_rows)) for e in experts}


def uniform_rows(num_rows: int, max_rows: int) -> np.ndarray:
    """Deterministic evaluation subsample: indices ``round(linspace(0, R-1, max_rows))`` (all rows if R <= max)."""
    if num_rows <= max_rows:
        return np.arange(num_rows)
    return np.round(np.linspace(0, num_rows - 1, max_rows)).astype(np.int64)


class RetrievalDataset(torch.utils.data.Dataset):
    """Videos of one split (``split=None``: all given records) with captions and per-expert features.

    ``readers`` maps expert name -> FeatureReader; expert order is the dict's order (it is the column order of
    ``VideoBatch.available``). ``max_rows``: the row cap of every expert, or one per expert (``row_caps``).
    ``train`` selects the row and caption sampling described in the module docstring.
    """

    def __init__(
        self,
        records: list[VideoRecord],
        readers: dict,
        max_rows: int | Mapping[str, int] = 30,
        split: str | None = None,
        train: bool = False,
        seed: int = 0,
    ):
        self.experts = list(readers)
        caps = max_rows if isinstance(max_rows, Mapping) else dict.fromkeys(self.experts, max_rows)
        missing = [e for e in self.experts if e not in caps]
        if missing or any(caps[e] < 1 for e in self.experts):
            raise T2VError(f"max_rows must give every expert a cap >= 1, got {dict(caps)} for {self.experts}")
        self.dims = {e: int(r.dim) for e, r in readers.items()}
        self.max_rows = {e: int(caps[e]) for e in self.experts}
        self.train = train
        self.seed = seed
        self.records = [r for r in records if (split is None or r.split == split) and r.captions]
        self.split = split
        ids = [r.video_id for r in self.records]
        self.video_ids = ids
        self.rows: dict[str, list[np.ndarray]] = {}
        self.missing: dict[str, list[str]] = {}
        self.absent: dict[str, list[str]] = {}
        for expert, reader in readers.items():
            present = [v for v in ids if v in reader]
            self.absent[expert] = [v for v in ids if v not in reader]
            got = reader.get_many(present) if present else {}
            empty = np.zeros((0, self.dims[expert]), np.float32)
            rows, missing = [], []
            for vid in ids:
                vf = got.get(vid)
                if vf is None or int(vf.status) != STATUS_OK or len(vf.features) == 0:
                    rows.append(empty)
                    missing.append(vid)
                    continue
                arr = np.asarray(vf.features, np.float32)
                rows.append(arr if train else arr[uniform_rows(len(arr), self.max_rows[expert])])
            self.rows[expert] = rows
            self.missing[expert] = missing
        self._rng = np.random.default_rng([seed, 0])

    def require_extracted(self) -> None:
        """Raise T2VError when some video was never extracted for some expert (absent from its reader; a video
        whose extraction failed or found nothing is present with status failed/empty and is fine)."""
        for expert, absent in self.absent.items():
            if absent:
                raise T2VError(
                    f"split {self.split!r}: {len(absent)} of {len(self)} videos have no {expert!r} features "
                    f"(e.g. {', '.join(absent[:3])}); run t2v extract for this manifest first"
                )

    def set_epoch(self, epoch: int) -> None:
        """Re-seed row and caption sampling for ``epoch`` (training), so a resumed run draws the same samples."""
        self._rng = np.random.default_rng([self.seed, epoch])

    def __len__(self) -> int:
        return len(self.records)

    def availability(self) -> np.ndarray:
        """(num_videos, num_experts) bool: which expert has usable rows for which video."""
        return np.array([[len(self.rows[e][i]) > 0 for e in self.experts] for i in range(len(self))], bool)

    def queries(self) -> tuple[list[str], np.ndarray]:
        """Evaluation queries: every caption of every video, and (num_texts,) int64 video column of each."""
        texts, cols = [], []
        for i, rec in enumerate(self.records):
            texts.extend(rec.captions)
            cols.extend([i] * len(rec.captions))
        return texts, np.asarray(cols, np.int64)

    def __getitem__(self, index: int) -> VideoSample:
        rec = self.records[index]
        rows = {}
        for e in self.experts:
            arr = self.rows[e][index]
            if self.train and len(arr) > self.max_rows[e]:
                keep = np.sort(self._rng.choice(len(arr), self.max_rows[e], replace=False))
                arr = arr[keep]
            rows[e] = arr
        caption = None
        if self.train:
            caption = rec.captions[int(self._rng.integers(len(rec.captions)))]
        return VideoSample(video_id=rec.video_id, index=index, rows=rows, caption=caption)


def collate(samples: list[VideoSample], experts: list[str], dims: dict[str, int]) -> Batch:
    """Pad each expert's rows to the batch maximum (at least 1): features (B, R_e, D_e) float32, masks (B, R_e)
    bool with True = real row, available (B, n_experts) bool in ``experts`` order."""
    features, masks = {}, {}
    available = torch.zeros(len(samples), len(experts), dtype=torch.bool)
    for j, e in enumerate(experts):
        length = max(1, max(len(s.rows[e]) for s in samples))
        feats = torch.zeros(len(samples), length, dims[e])
        mask = torch.zeros(len(samples), length, dtype=torch.bool)
        for i, s in enumerate(samples):
            n = len(s.rows[e])
            if n:
                feats[i, :n] = torch.from_numpy(s.rows[e])
                mask[i, :n] = True
                available[i, j] = True
        features[e] = feats
        masks[e] = mask
    return Batch(
        video=VideoBatch(features=features, masks=masks, available=available, experts=list(experts)),
        captions=[s.caption for s in samples if s.caption is not None],
        video_ids=[s.video_id for s in samples],
        indices=torch.tensor([s.index for s in samples], dtype=torch.long),
    )


def make_loader(
    dataset: RetrievalDataset, batch_size: int, shuffle: bool, generator: torch.Generator | None = None
) -> torch.utils.data.DataLoader:
    """A single-process DataLoader (features are in memory already) collating into ``Batch``."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=0,
        collate_fn=lambda s: collate(s, dataset.experts, dataset.dims),
    )
