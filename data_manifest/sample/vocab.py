"""Word lists, colours and caption templates of the embedded sample dataset (see ``data_manifest.sample.generate``).

The on-screen words (upper case, read by OCR) and the spoken nouns (heard by ASR) come from two disjoint
vocabularies of 100 words each, so that a caption naming both points at very few clips. Captions are built from
clause paraphrases of what is seen (shape, colour, motion, background), read (the on-screen word) and heard
(the spoken word, the background tone); every caption names at least two of {shape+motion, on-screen word,
spoken word, background}.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# name -> RGB (0..255)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 20),
    "purple": (140, 50, 170),
    "pink": (245, 130, 190),
    "cyan": (40, 200, 220),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "brown": (130, 80, 40),
    "grey": (128, 128, 128),
}

SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "round shape", "disc"),
    "square": ("square", "box shape", "square"),
    "triangle": ("triangle", "three-sided shape", "triangle"),
    "star": ("star", "star shape", "five-pointed star"),
    "diamond": ("diamond", "rhombus", "diamond shape"),
    "hexagon": ("hexagon", "six-sided shape", "hexagon"),
    "ring": ("ring", "hollow circle", "ring"),
    "cross": ("cross", "plus sign", "cross"),
    "heart": ("heart", "heart shape", "heart"),
}

# motion -> (clause paraphrases, participle paraphrases)
MOTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "left": (
        ("moves to the left", "slides left", "travels from right to left"),
        ("moving to the left", "sliding left", "travelling from right to left"),
    ),
    "right": (
        ("moves to the right", "slides right", "travels from left to right"),
        ("moving to the right", "sliding right", "travelling from left to right"),
    ),
    "up": (("rises", "moves upward", "floats up"), ("rising", "moving upward", "floating up")),
    "down": (("falls", "moves down", "drops toward the bottom"), ("falling", "moving down", "dropping down")),
    "diagonal": (
        ("moves diagonally", "crosses the frame diagonally", "glides diagonally"),
        ("moving diagonally", "crossing the frame diagonally", "gliding diagonally"),
    ),
    "circling": (
        ("moves in a circle", "circles around the middle", "goes round in circles"),
        ("moving in a circle", "circling around the middle", "going round in circles"),
    ),
    "bouncing": (
        ("bounces", "bounces up and down", "hops up and down"),
        ("bouncing", "bouncing up and down", "hopping up and down"),
    ),
    "pulsing": (
        ("pulses", "grows and shrinks", "pulses in place"),
        ("pulsing", "growing and shrinking", "pulsing in place"),
    ),
}

SCREEN_WORDS: tuple[str, ...] = (
    "TIGER", "ZEBRA", "EAGLE", "SHARK", "WHALE", "SNAKE", "HORSE", "MOUSE", "CAMEL", "OTTER",
    "PANDA", "KOALA", "LLAMA", "BISON", "RAVEN", "GOOSE", "SHEEP", "LEMON", "MANGO", "PEACH",
    "GRAPE", "APPLE", "MELON", "OLIVE", "BREAD", "PIZZA", "PASTA", "HONEY", "SUGAR", "CANDY",
    "PIANO", "GUITAR", "VIOLIN", "FLUTE", "CAMERA", "ROBOT", "LASER", "RADIO", "PHONE", "CLOCK",
    "JACKET", "BOOTS", "SCARF", "CROWN", "SWORD", "ARROW", "SHIELD", "CASTLE", "TOWER", "BRIDGE",
    "PALACE", "TEMPLE", "MARKET", "CINEMA", "MUSEUM", "GARDEN", "DESERT", "JUNGLE", "VOLCANO", "CANYON",
    "ISLAND", "PLANET", "COMET", "GALAXY", "ORBIT", "THUNDER", "STORM", "RAINBOW", "SUNSET", "WINTER",
    "SUMMER", "AUTUMN", "MAGNET", "SPIDER", "BEETLE", "PARROT", "PENGUIN", "DRAGON", "WIZARD", "PIRATE",
    "KNIGHT", "RIDDLE", "PUZZLE", "TICKET", "WALLET", "BASKET", "CANDLE", "LANTERN", "ANCHOR", "COMPASS",
    "HELMET", "ROCKET", "FALCON", "COBRA", "JAGUAR", "LOBBY", "RODEO", "SAFARI", "TANGO", "VELVET",
)  # fmt: skip

SPOKEN_WORDS: tuple[str, ...] = (
    "airport", "balloon", "banana", "beach", "bicycle", "blanket", "carpet", "carrot", "chicken", "chocolate",
    "coffee", "engine", "factory", "farmer", "helicopter", "highway", "hospital", "iceberg", "kitchen", "ladder",
    "lawyer", "library", "lighthouse", "lizard", "lobster", "meadow", "mirror", "monkey", "mountain", "mushroom",
    "necklace", "needle", "ocean", "oven", "painter", "pancake", "pencil", "pillow", "pocket", "potato",
    "pumpkin", "puppy", "rabbit", "river", "saddle", "sailor", "sandwich", "soldier", "spoon", "squirrel",
    "stadium", "station", "strawberry", "student", "subway", "waterfall", "window", "lemonade", "hotel", "garage",
    "farmhouse", "parade", "picnic", "acrobat", "astronaut", "avocado", "backpack", "bagel", "bamboo", "bandage",
    "barber", "beaver", "biscuit", "broccoli", "cactus", "computer", "crocodile", "curtain", "firework", "flamingo",
    "flashlight", "garlic", "hamburger", "hamster", "hedgehog", "jellyfish", "kangaroo", "keyboard", "microphone", "motorcycle",
    "octopus", "pineapple", "popcorn", "raccoon", "scarecrow", "skateboard", "snowman", "spaghetti", "suitcase", "telescope",
)  # fmt: skip

# espeak-ng renders (voice en-us+m3, 140 words/min) of both forms were transcribed correctly by whisper tiny.en for
# every word of SPOKEN_WORDS, which was filtered that way from a larger pool; longer carrier phrases fared worse.
SPEECH_TEMPLATES: tuple[str, ...] = ("the {w}.", "{w}!")

TEXT_STYLES: dict[str, tuple[str, str]] = {  # name -> (font colour, box colour), all high contrast for OCR
    "white on black": ("white", "black"),
    "black on white": ("black", "white"),
    "yellow on black": ("yellow", "black"),
}

TONE_FREQUENCIES: tuple[int, ...] = (220, 330, 440, 660, 880, 1320)
NOISE_COLOURS: tuple[str, ...] = ("white", "pink", "brown")


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def background_phrase(bg: dict[str, Any]) -> str:
    """Noun phrase for a background dict (``kind`` solid|gradient|noise|stripes, ``colours``)."""
    colours = bg["colours"]
    if bg["kind"] == "solid":
        return f"a {colours[0]} background"
    if bg["kind"] == "gradient":
        return f"a {colours[0]} to {colours[1]} gradient"
    if bg["kind"] == "noise":
        return f"a noisy {colours[0]} background"
    return f"a {colours[0]} and {colours[1]} striped background"


def tone_phrase(tone: dict[str, Any] | None, rng: np.random.Generator) -> str:
    """Prepositional phrase for the background sound; ``None`` means the clip has no audio track."""
    if tone is None:
        return _pick(rng, ("in silence", "with no sound at all", "without any sound"))
    if tone["kind"] == "noise":
        name = {"white": "a hiss of white noise", "pink": "soft pink noise", "brown": "a low rumbling noise"}
        return f"with {name[tone['colour']]} in the background"
    pitch = "low" if tone["frequency"] <= 330 else "high" if tone["frequency"] >= 880 else "medium"
    if tone["pattern"] == "beeping":
        return _pick(rng, (f"with {pitch} beeps", f"over a {pitch} beeping tone"))
    return _pick(rng, (f"with a steady {pitch} tone", f"over a {pitch} humming tone"))


def _phrases(meta: dict[str, Any], rng: np.random.Generator) -> dict[str, str]:
    """Paraphrase fragments for one caption; keys present only for attributes the clip has."""
    main = meta["shapes"][0]
    subject = f"a {main['colour']} {_pick(rng, SHAPES[main['shape']])}"
    clauses, participles = MOTIONS[main["motion"]]
    extra = ""
    if len(meta["shapes"]) > 1 and rng.random() < 0.5:
        second = meta["shapes"][1]
        extra = f" next to a small {second['colour']} {second['shape']}"
    out = {
        "V": f"{subject} {_pick(rng, clauses)}{extra}",
        "Vp": f"{subject} {_pick(rng, participles)}{extra}",
        "B": background_phrase(meta["background"]),
        "A": tone_phrase(meta["tone"] if meta["has_audio"] else None, rng),
    }
    if meta["has_text"]:
        w = meta["word"]
        out["T"] = _pick(
            rng,
            (
                f"the word {w} appears",
                f"{w} is written on the screen",
                f"a sign reads {w}",
                f"the text {w} is shown",
            ),
        )
        out["Tp"] = _pick(rng, (f"the word {w} on screen", f"the text {w}", f"a title that reads {w}"))
    if meta["has_speech"]:
        w = meta["spoken_word"]
        out["S"] = _pick(
            rng,
            (f"a voice says {w}", f'someone says "{w}"', f"a person says the word {w}", f"you hear {w}"),
        )
        out["Sp"] = _pick(rng, (f"a voice saying {w}", f"a voice calling out {w}", f"the spoken word {w}"))
    return out


# (template, attributes it names among V/T/S/B)
CAPTION_TEMPLATES: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (t, frozenset(k for k in ("V", "T", "S", "B") if "{" + k in t))
    for t in (
        "{V} on {B} while {S}",
        "{T} on {B}",
        "{S} as {V}",
        "{V} and {T}",
        "{T} while {S}",
        "{Vp} on {B}, {A}",
        "{S} {A} while {T}",
        "{Tp} on {B}, {A}",
        "{Vp} on {B} with {Tp}",
        "{Sp} and {Tp} on {B}",
        "{V} while {S}",
        "on {B}, {T}",
        "{Sp} over {B}",
        "{Vp} while {S}",
        "{V} on {B}",
        "on {B}, {V} {A}",
        "{V} against {B}",
    )
)


def _full_caption(p: dict[str, str], has: set[str]) -> str:
    parts = [f"{p['V']} on {p['B']}"]
    if "T" in has:
        parts.append(p["T"])
    if "S" in has:
        parts.append(p["S"])
    return (
        ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else f"{p['Vp']} on {p['B']}, {p['A']}"
    )


def compose_captions(meta: dict[str, Any], rng: np.random.Generator) -> list[str]:
    """3-5 distinct paraphrases for a clip's ``meta``; the first names everything the clip shows and says.

    When the clip has an on-screen word or speech, every caption names at least one of them.
    """
    has = {"V", "B"} | ({"T"} if meta["has_text"] else set()) | ({"S"} if meta["has_speech"] else set())
    words = has & {"T", "S"}
    eligible = [
        t for t, need in CAPTION_TEMPLATES if need <= has and len(need) >= 2 and (not words or need & words)
    ]
    k = int(rng.integers(3, 6))
    captions = [_full_caption(_phrases(meta, rng), has)]
    for idx in rng.permutation(len(eligible)):
        if len(captions) >= k:
            break
        text = eligible[int(idx)].format(**_phrases(meta, rng))
        if text not in captions:
            captions.append(text)
    return [c[0].upper() + c[1:] for c in captions]
