"""The project's class list: ordered classes with stable ids, phrases and colours. Qt-free.

A class is typed as one or more phrases separated by ``;`` ("car; automobile"); the first phrase is
its display name and all of them are averaged as prompts by the engine. What a typed name means is
``chimera_engine.class_names``'s rule, the engine's own, so the list never accepts what the engine refuses. Ids are stable: a label map
stores ids, so an id is never given to another class, even after its class was deleted (the list
keeps ``next_id``). Colours are ``default_color(id)`` unless the user picked one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from chimera_engine.class_names import parse_class, phrase_key
from chimera_engine.errors import ClassNameError
from chimera_engine.formats.palette import class_color

__all__ = ["DISTINCT_COLORS", "MAX_CLASS_ID", "ClassList", "LabelClass", "default_color"]

MAX_CLASS_ID = 0xFFFF  # label maps are uint16; 0 means unlabeled

# The first classes' colours: hues far apart, each added in turn as the one farthest (in summed
# RGB distance) from all before it, so any first N are as distinct as they can be (pairwise >= 127).
# No grey or near-black: those read as "unlabeled" on a mask.
DISTINCT_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (70, 240, 240), (0, 80, 40), (255, 225, 25), (250, 190, 212), (100, 60, 255),
    (128, 128, 0), (0, 130, 200), (60, 180, 75), (0, 0, 128), (240, 50, 230), (170, 255, 195),
    (145, 30, 180), (128, 0, 0), (245, 130, 48), (255, 120, 160),
)


def default_color(class_id: int) -> tuple[int, int, int]:
    """The colour a new class with this id gets: one of DISTINCT_COLORS for the first ids, then
    the VOC-style bit-spread palette (distinct, if less well separated)."""
    if 1 <= class_id <= len(DISTINCT_COLORS):
        return DISTINCT_COLORS[class_id - 1]
    return class_color(class_id)


@dataclass
class LabelClass:
    id: int  # stable, >= 1, never reused
    name: str  # display name = first phrase
    phrases: list[str]
    color: tuple[int, int, int]
    hidden: bool = False

    @property
    def prompt(self) -> str:
        """What chimera_engine.Segmenter.segment takes for this class: its phrases joined by "; "."""
        return "; ".join(self.phrases)

    def to_json(self) -> dict:
        return {"id": self.id, "phrases": list(self.phrases), "color": list(self.color), "hidden": self.hidden}


def _check_color(rgb) -> tuple[int, int, int]:
    color = tuple(int(c) for c in rgb)
    if len(color) != 3 or not all(0 <= c <= 255 for c in color):
        raise ValueError(f"a colour is three integers in 0..255, got {rgb!r}")
    return color  # type: ignore[return-value]


class ClassList:
    """Ordered classes (order = display order and keys 1..9). ``changed`` callables are called with
    no argument after every change, so a view can refresh without the list knowing any GUI."""

    def __init__(self, next_id: int = 1) -> None:
        self._classes: list[LabelClass] = []
        self.next_id = next_id  # the id the next added class gets; never decreases
        self.changed: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"ClassList({[c.prompt for c in self._classes]!r}, next_id={self.next_id})"

    # -- reading --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[LabelClass]:
        return iter(list(self._classes))

    def __len__(self) -> int:
        return len(self._classes)

    def __contains__(self, class_id: object) -> bool:
        return any(c.id == class_id for c in self._classes)

    def by_id(self, class_id: int) -> LabelClass:
        for c in self._classes:
            if c.id == class_id:
                return c
        raise KeyError(f"no class with id {class_id}")

    def at_key(self, n: int) -> LabelClass | None:
        """The class on number key ``n`` (1..9), or None when there is none."""
        return self._classes[n - 1] if 1 <= n <= min(9, len(self._classes)) else None

    def ids(self) -> list[int]:
        return [c.id for c in self._classes]

    def prompts(self) -> list[str]:
        return [c.prompt for c in self._classes]

    def find(self, text: str) -> LabelClass | None:
        """The class whose name, or else any of whose phrases, equals ``text`` (case-insensitive)."""
        key = phrase_key(text)
        for match in (lambda c: phrase_key(c.name) == key, lambda c: key in {phrase_key(p) for p in c.phrases}):
            found = next((c for c in self._classes if match(c)), None)
            if found is not None:
                return found
        return None

    def check(self, text: str, exclude: int | None = None) -> list[str]:
        """The phrases ``text`` would have as a new class (or as the new name of class ``exclude``);
        ClassNameError (its message meant to be shown) when it has none, repeats one, or shares one
        with another class. Changes nothing: the class panel checks a draft with it as it is typed."""
        used = {phrase_key(p): f"the class {c.name!r}" for c in self._classes if c.id != exclude for p in c.phrases}
        return parse_class(str(text), used)

    # -- changing -------------------------------------------------------------------------------
    def add(self, text: str) -> LabelClass:
        """Add a class typed as "name; other phrase"; it gets the next id and that id's colour.

        Raises ClassNameError for an empty name, a phrase repeated in ``text`` or one that another
        class already has (case-insensitive: such classes could never be told apart).
        """
        phrases = self.check(text, exclude=None)
        if self.next_id > MAX_CLASS_ID:
            raise ClassNameError(f"a project holds at most {MAX_CLASS_ID} classes over its lifetime")
        new = LabelClass(self.next_id, phrases[0], phrases, default_color(self.next_id))
        self._classes.append(new)
        self.next_id += 1
        self._notify()
        return new

    def rename(self, class_id: int, text: str) -> LabelClass:
        """New phrases for a class (same validation as add); its id and colour stay."""
        target = self.by_id(class_id)
        phrases = self.check(text, exclude=class_id)
        target.phrases, target.name = phrases, phrases[0]
        self._notify()
        return target

    def remove(self, class_id: int) -> None:
        """Delete a class. Its id is retired: ``next_id`` does not go back."""
        self._classes.remove(self.by_id(class_id))
        self._notify()

    def move(self, class_id: int, new_index: int) -> None:
        """Put a class at ``new_index`` of the display order (clamped to the list)."""
        target = self.by_id(class_id)
        self._classes.remove(target)
        self._classes.insert(max(0, min(new_index, len(self._classes))), target)
        self._notify()

    def set_hidden(self, class_id: int, hidden: bool) -> None:
        self.by_id(class_id).hidden = bool(hidden)
        self._notify()

    def set_color(self, class_id: int, rgb: tuple[int, int, int]) -> None:
        self.by_id(class_id).color = _check_color(rgb)
        self._notify()

    # -- files ----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """``{"classes": [{"id", "phrases", "color", "hidden"}, ...], "next_class_id": N}``."""
        return {"classes": [c.to_json() for c in self._classes], "next_class_id": self.next_id}

    @classmethod
    def from_json(cls, data: dict) -> ClassList:
        """The list ``to_json`` wrote. Raises ClassNameError or ValueError for an inconsistent one
        (repeated id or phrase, id at or above next_class_id, bad colour)."""
        result = cls(next_id=int(data.get("next_class_id", 1)))
        for item in data.get("classes", []):
            class_id = int(item["id"])
            if not 1 <= class_id < result.next_id or class_id in result:
                raise ValueError(f"class id {class_id} is repeated or not below next_class_id {result.next_id}")
            phrases = result.check("; ".join(item["phrases"]), exclude=None)
            color = _check_color(item.get("color", class_color(class_id)))
            result._classes.append(LabelClass(class_id, phrases[0], phrases, color, bool(item.get("hidden", False))))
        return result

    def copy(self) -> ClassList:
        """An independent copy without observers (to try changes before making them)."""
        return ClassList.from_json(self.to_json())

    # -- inside ---------------------------------------------------------------------------------
    def _notify(self) -> None:
        for callback in list(self.changed):
            callback()
