"""The one class-name grammar: phrases, folding, validation, and the same verdict everywhere."""

import subprocess
import sys

import pytest

from chimera_engine.class_names import normalize, parse_class, parse_classes, phrase_key, split_phrases
from chimera_engine.errors import ClassNameError


def test_phrases_are_split_and_whitespace_folded():
    assert split_phrases(" car ;  automobile ;; ") == ["car", "automobile"]
    assert split_phrases("traffic   light") == ["traffic light"]
    assert split_phrases(";;") == [] and split_phrases("") == []
    assert normalize("  big   car ;auto ;") == "big car; auto"
    assert phrase_key(" Big  CAR ") == "big car"


@pytest.mark.parametrize("classes, words", [
    ([], "empty"),
    (["road", "  "], "class 2 has an empty name"),
    (["road", ";"], "empty name"),
    (["Car", "car"], "classes 1 and 2"),
    (["car; auto", "bus; AUTO"], "classes 1 and 2"),
    (["car; car"], "twice"),
    (["big car", "big  car"], "classes 1 and 2"),  # whitespace folded before comparing
    (["big car", "cat; cat"], "twice"),
])
def test_bad_class_lists_raise_clear_errors(classes, words):
    with pytest.raises(ClassNameError, match=words):
        parse_classes(classes)


def test_a_class_list_is_not_one_string():
    with pytest.raises(TypeError):
        parse_classes("car; bus")
    assert parse_classes(["road", "car; automobile"]) == [["road"], ["car", "automobile"]]


def test_one_class_against_the_phrases_others_own():
    used = {"car": "the class 'car'"}
    assert parse_class(" bus ; coach ", used) == ["bus", "coach"]
    with pytest.raises(ClassNameError, match="already used by the class 'car'"):
        parse_class("CAR", used)
    with pytest.raises(ClassNameError, match="needs a name"):
        parse_class(" ; ")
    with pytest.raises(ClassNameError, match="twice"):
        parse_class("cat; Cat")


@pytest.mark.parametrize("draft", ["big  car", "cat; cat", "Big Car; lorry", ""])
def test_the_engine_and_the_project_give_a_draft_the_same_verdict(draft):
    from chimera_app.project.classes import ClassList

    classes = ClassList()
    classes.add("big car")

    def verdict(check):
        try:
            check()
        except ClassNameError:
            return False
        return True

    engine_says = verdict(lambda: parse_classes(classes.prompts() + [draft]))
    project_says = verdict(lambda: classes.check(draft))
    assert engine_says is project_says is False


def test_the_grammar_imports_nothing_heavy():
    code = ("import sys, chimera_engine.class_names, chimera_engine.errors, chimera_engine.model_names; "
            "heavy = sorted(m for m in ('torch', 'numpy', 'open_clip', 'cv2') if m in sys.modules); "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_class_lists_are_bounded():
    import pytest

    from chimera_engine.class_names import parse_classes
    from chimera_engine.errors import ClassNameError
    from chimera_engine.limits import MAX_CLASSES

    assert len(parse_classes([f"class {i}" for i in range(MAX_CLASSES)])) == MAX_CLASSES
    with pytest.raises(ClassNameError, match="limit"):
        parse_classes([f"class {i}" for i in range(MAX_CLASSES + 1)])
