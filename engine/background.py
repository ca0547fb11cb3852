"""Background prompts: what competes with the classes so that pixels of none of them stay unlabeled.

``--background stuff`` (and the app's background choice) expands to the stuff words that SCLIP,
ClearCLIP and NACLIP use as PASCAL VOC's background class (``resources/background/stuff.txt``);
any other text is a comma-separated list of phrases. Each word is its own prompt: the argmax over
prompts equals these papers' rule of taking, per class, the best of its words.
"""

from __future__ import annotations

from importlib import resources

PRESETS = ("stuff",)


def preset_words(name: str) -> list[str]:
    path = resources.files("resources") / "background" / f"{name}.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def background_prompts(spec: str | None) -> list[str]:
    """``"stuff"`` → the preset words; ``"sky, wall"`` → ``["sky", "wall"]``; empty → ``[]``."""
    text = (spec or "").strip()
    if not text:
        return []
    if text.lower() in PRESETS:
        return preset_words(text.lower())
    return [" ".join(part.split()) for part in text.split(",") if part.strip()]
