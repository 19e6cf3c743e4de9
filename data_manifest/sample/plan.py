"""What each sample clip is: a JSON-able plan per clip, a pure function of (n, seed, index).

Splits: the last third is ``test``, about 7 % ``val``, the rest ``train``. About 8 % of clips get no audio track,
15 % no speech (those included) and 15 % no on-screen word. On-screen and spoken words are drawn without replacement
within each split. All randomness comes from ``numpy.random.default_rng([seed, index])`` per clip plus a few
seed-level permutations (flags, per-split word orders).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from data_manifest.sample.vocab import (
    MOTIONS,
    NOISE_COLOURS,
    PALETTE,
    SCREEN_WORDS,
    SHAPES,
    SPEECH_TEMPLATES,
    SPOKEN_WORDS,
    TEXT_STYLES,
    TONE_FREQUENCIES,
)

GENERATOR_VERSION = "t2v-sample/1"
SIZES: tuple[tuple[int, int], ...] = ((160, 120), (192, 144), (224, 168), (256, 144))
FRAME_RATES: tuple[int, ...] = (12, 15, 24, 25)
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = {"DejaVuSans-Bold": FONT_DIR / "DejaVuSans-Bold.ttf", "DejaVuSans": FONT_DIR / "DejaVuSans.ttf"}
ESPEAK_VOICE, ESPEAK_SPEED = "en-us+m3", 140
BACKGROUND_KINDS = ("solid", "gradient", "noise", "stripes")


def split_counts(n: int) -> tuple[int, int, int]:
    """(train, val, test) clip counts: test is the last third, val about 7 % (180/20/100 for n=300)."""
    test = n // 3
    val = max(1, round(n / 15)) if n >= 3 else 0
    return n - val - test, val, test


def _flag_sets(n: int, seed: int) -> tuple[set[int], set[int], set[int]]:
    """Clip indices without an audio track (~8 %), without speech (~15 %, includes the former), without text (~15 %)."""
    rng = np.random.default_rng([seed, 1_000_003])
    few = 1 if n >= 4 else 0
    n_audio = max(few, round(0.08 * n))
    n_speech = max(n_audio + few, round(0.15 * n))
    order = [int(i) for i in rng.permutation(n)]
    text_order = [int(i) for i in rng.permutation(n)]
    return set(order[:n_audio]), set(order[:n_speech]), set(text_order[: max(few, round(0.15 * n))])


def _pick(rng: np.random.Generator, options: tuple | list) -> Any:
    return options[int(rng.integers(len(options)))]


def _contrasting(rng: np.random.Generator, avoid: list[str], min_dist: float = 150.0) -> str:
    """A palette colour far (RGB distance) from every colour in ``avoid``."""
    ok = [
        c
        for c, rgb in PALETTE.items()
        if all(np.linalg.norm(np.subtract(rgb, PALETTE[a])) >= min_dist for a in avoid) and c not in avoid
    ]
    return _pick(rng, ok)


def _background(rng: np.random.Generator) -> dict[str, Any]:
    kind = _pick(rng, BACKGROUND_KINDS)
    first = _pick(rng, list(PALETTE))
    second = _pick(rng, [c for c in PALETTE if c != first])
    bg: dict[str, Any] = {"kind": kind, "colours": [first] if kind in ("solid", "noise") else [first, second]}
    if kind in ("gradient", "stripes"):
        bg["direction"] = _pick(rng, ("horizontal", "vertical"))
    if kind == "stripes":
        bg["stripe"] = int(rng.integers(8, 17))
    if kind == "noise":
        bg["noise_seed"] = int(rng.integers(2**31))
    return bg


def _shape(
    rng: np.random.Generator, avoid_colours: list[str], avoid_shape: str | None, size: int, motion: str
):
    return {
        "shape": _pick(rng, [s for s in SHAPES if s != avoid_shape]),
        "colour": _contrasting(rng, avoid_colours),
        "motion": motion,
        "size": size,
        "x": round(float(rng.uniform(0.1, 0.9)), 3),
        "y": round(float(rng.uniform(0.1, 0.9)), 3),
        "phase": round(float(rng.uniform(0, 2 * np.pi)), 3),
        "direction": [int(rng.choice([-1, 1])), int(rng.choice([-1, 1]))],
    }


def plan_clip(
    seed: int, index: int, split: str, word: str | None, spoken: str | None, has_audio: bool
) -> dict:
    """Every generation attribute of clip ``index`` (JSON-able); a pure function of its arguments."""
    rng = np.random.default_rng([seed, index])
    width, height = _pick(rng, SIZES)
    fps = _pick(rng, FRAME_RATES)
    num_frames = int(np.clip(round(rng.uniform(3.0, 8.0) * fps), 3 * fps, 8 * fps))
    duration = num_frames / fps
    bg = _background(rng)
    main_size = int(round(min(width, height) * rng.uniform(0.3, 0.42)))
    shapes = [_shape(rng, bg["colours"], None, main_size, _pick(rng, list(MOTIONS)))]
    if rng.random() < 0.35:
        avoid = bg["colours"] + [shapes[0]["colour"]]
        shapes.append(_shape(rng, avoid, shapes[0]["shape"], max(12, int(main_size * 0.55)), "static"))
    plan: dict[str, Any] = {
        "generator": GENERATOR_VERSION,
        "index": index,
        "split": split,
        "size": [width, height],
        "fps": fps,
        "num_frames": num_frames,
        "duration": round(duration, 4),
        "background": bg,
        "shapes": shapes,
        "has_text": word is not None,
        "has_audio": has_audio,
        "has_speech": spoken is not None,
    }
    if word is not None:
        start = round(float(rng.uniform(0.0, 0.3)) * duration, 2)
        plan.update(
            word=word,
            word_start=start,
            word_end=round(min(duration, start + float(rng.uniform(0.5, 0.8)) * duration), 2),
            word_position=_pick(rng, ("center", "top", "bottom")),
            text_style=_pick(rng, list(TEXT_STYLES)),
            font=_pick(rng, ("DejaVuSans-Bold", "DejaVuSans-Bold", "DejaVuSans")),
        )
    if has_audio:
        if rng.random() < 0.6:
            plan["tone"] = {
                "kind": "sine",
                "frequency": _pick(rng, TONE_FREQUENCIES),
                "pattern": _pick(rng, ("steady", "beeping")),
                "level": round(float(rng.uniform(0.04, 0.08)), 3),
            }
        else:
            plan["tone"] = {
                "kind": "noise",
                "colour": _pick(rng, NOISE_COLOURS),
                "level": round(float(rng.uniform(0.03, 0.06)), 3),
                "noise_seed": int(rng.integers(2**31)),
            }
    else:
        plan["tone"] = None
    if spoken is not None:
        plan.update(
            spoken_word=spoken,
            spoken_phrase=_pick(rng, SPEECH_TEMPLATES).format(w=spoken),
            voice=ESPEAK_VOICE,
            speed=ESPEAK_SPEED,
            pitch=int(rng.integers(40, 61)),
            speech_offset=round(float(rng.uniform(0.0, 1.0)), 3),
        )
    return plan


def plan_dataset(n: int, seed: int) -> list[dict[str, Any]]:
    """Plans of all ``n`` clips: splits, flags and per-split word draws without replacement."""
    n_train, n_val, _ = split_counts(n)
    no_audio, no_speech, no_text = _flag_sets(n, seed)
    plans = []
    counters: dict[str, list[int]] = {}
    for i in range(n):
        split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
        code = ("train", "val", "test").index(split)
        text_perm = np.random.default_rng([seed, 2_000_003, code]).permutation(len(SCREEN_WORDS))
        speech_perm = np.random.default_rng([seed, 3_000_017, code]).permutation(len(SPOKEN_WORDS))
        k_text, k_speech = counters.setdefault(split, [0, 0])
        word = spoken = None
        if i not in no_text:
            word = SCREEN_WORDS[int(text_perm[k_text % len(SCREEN_WORDS)])]
            counters[split][0] += 1
        if i not in no_speech:
            spoken = SPOKEN_WORDS[int(speech_perm[k_speech % len(SPOKEN_WORDS)])]
            counters[split][1] += 1
        plans.append(plan_clip(seed, i, split, word, spoken, i not in no_audio))
    return plans


def plan_digest(plan: dict[str, Any]) -> str:
    """16 hex characters identifying a plan; embedded in the mp4's ``comment`` tag."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
