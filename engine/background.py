"""Background prompts: what competes with the classes so that pixels of none of them stay unlabeled.

``--background stuff`` (and the app's background choice) expands to the stuff words that SCLIP,
ClearCLIP and NACLIP use as PASCAL VOC's background class (``resources/background/stuff.txt``);
any other text is a comma-separated list of phrases. Each word is its own prompt: the argmax over
prompts equals these papers' rule of taking, per class, the best of its words.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from chimera_engine.class_names import split_phrases

PRESETS = ("stuff",)


def preset_words(name: str) -> list[str]:
    path = resources.files("chimera_resources") / "background" / f"{name}.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def background_prompts(spec: str | None, classes: Sequence[str] = ()) -> list[str]:
    """``"stuff"`` → the preset words; ``"sky, wall"`` → ``["sky", "wall"]``; empty or "none" → ``[]``.

    Words that are also a phrase of one of ``classes`` are left out: the class owns them (with
    "bed" as a class, a "bed" background prompt would make every bed pixel unlabeled).
    """
    text = (spec or "").strip()
    if not text or text.lower() == "none":
        return []
    words = preset_words(text.lower()) if text.lower() in PRESETS else \
        [" ".join(part.split()) for part in text.split(",") if part.strip()]
    return not_owned(words, classes)


def not_owned(words: Sequence[str], classes: Sequence[str]) -> list[str]:
    """``words`` without those that are a phrase of one of ``classes`` (the class owns them)."""
    owned = {p.casefold() for c in classes for p in split_phrases(str(c))}
    return [w for w in words if w.casefold() not in owned]
