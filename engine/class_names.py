"""The class-name grammar: the one place that says what a typed class name means. Torch-free.

A class is written as one or more phrases separated by ``;`` (``"car; automobile"``); whitespace
inside a phrase is folded to single spaces and empty phrases are dropped. The first phrase is the
class's display name; the engine averages all of them as prompts. Phrases are compared
case-insensitively: two classes sharing a phrase (or one class naming a phrase twice) could never be
told apart, so such a list is refused with a ``ClassNameError`` whose message is meant to be shown.

The engine (``chimera_engine.text``), the project's class list and the app's live preview all call this
module, so a draft such as ``"big  car"`` next to a class "big car" gets the same verdict
everywhere. It imports nothing heavy: the project store and ``chimera-app --help`` stay fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from chimera_engine.errors import ClassNameError
from chimera_engine.limits import MAX_CLASSES

__all__ = ["LIST_SEPARATOR", "SEPARATOR", "normalize", "parse_class", "parse_classes", "phrase_key",
           "split_class_list", "split_phrases"]

SEPARATOR = ";"  # between the phrases of one class
LIST_SEPARATOR = ","  # between classes, where a whole list is typed on one line (--classes)


def split_class_list(text: str) -> list[str]:
    """``"road, car;automobile ,,tree"`` → ``["road", "car;automobile", "tree"]`` (command lines)."""
    return [part.strip() for part in str(text).split(LIST_SEPARATOR) if part.strip()]


def split_phrases(text: str) -> list[str]:
    """``" car ;  automobile ;; "`` → ``["car", "automobile"]`` (whitespace folded, empty parts dropped)."""
    return [" ".join(part.split()) for part in str(text).split(SEPARATOR) if part.strip()]


def phrase_key(phrase: str) -> str:
    """What two phrases are compared by: folded whitespace, case-insensitive."""
    return " ".join(str(phrase).split()).casefold()


def normalize(text: str) -> str:
    """The canonical spelling of a class: its phrases joined by ``"; "`` (what the engine is sent)."""
    return f"{SEPARATOR} ".join(split_phrases(text))


def parse_class(text: str, used: Mapping[str, str] | None = None, number: int | None = None) -> list[str]:
    """The phrases of one class; ``ClassNameError`` when it has none or repeats one.

    ``used`` maps the ``phrase_key`` of every phrase other classes already own to its owner: a
    description (``"the class 'car'"``), or, for a class checked as part of a list (``number`` is
    its 1-based place there), the owner's number. A phrase found there is refused too.
    """
    phrases = split_phrases(text)
    if not phrases:
        raise ClassNameError(f"class {number} has an empty name" if number is not None
                             else "a class needs a name: type at least one letter")
    keys: set[str] = set()
    for phrase in phrases:
        key = phrase_key(phrase)
        if key in keys:
            raise ClassNameError(f"the phrase {phrase!r} is used twice in the same class")
        if used and key in used:
            raise ClassNameError(f"the phrase {phrase!r} is used by classes {used[key]} and {number}" if number is not None
                                 else f"the phrase {phrase!r} is already used by {used[key]}")
        keys.add(key)
    return phrases


def parse_classes(classes: Sequence[str]) -> list[list[str]]:
    """Validate a class list and split each class into phrases.

    Raises ClassNameError for an empty list, a class with no text, or a phrase used twice
    (case-insensitive, whitespace folded), within a class or by two classes.
    """
    if isinstance(classes, str):
        raise TypeError("classes must be a sequence of names, not one string")
    if not classes:
        raise ClassNameError("the class list is empty: type at least one class name")
    if len(classes) > MAX_CLASSES:
        raise ClassNameError(f"{len(classes)} classes is more than the limit of {MAX_CLASSES}")
    parsed: list[list[str]] = []
    owners: dict[str, str] = {}
    for number, text in enumerate(classes, start=1):
        phrases = parse_class(str(text), owners, number)
        owners.update((phrase_key(p), str(number)) for p in phrases)
        parsed.append(phrases)
    return parsed
