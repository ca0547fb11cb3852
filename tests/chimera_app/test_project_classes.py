"""ClassList: validation, stable ids and colours, order, observers, JSON round trip."""

import pytest

from chimera_app.project.classes import ClassList
from chimera_engine.errors import ClassNameError
from chimera_app.project.classes import default_color as class_color


def test_add_parses_phrases_and_gives_stable_ids_and_colours():
    classes = ClassList()
    car = classes.add("  car ;  automobile;; ")
    tree = classes.add("tree")
    assert (car.id, car.name, car.phrases, car.prompt) == (1, "car", ["car", "automobile"], "car; automobile")
    assert car.color == class_color(1) and tree.color == class_color(2)
    assert classes.ids() == [1, 2] and classes.prompts() == ["car; automobile", "tree"]
    assert 1 in classes and 3 not in classes and len(classes) == 2


@pytest.mark.parametrize("text, message", [
    ("", "needs a name"), (" ; ;", "needs a name"), ("Car", "already used by the class 'car'"),
    ("bus; AUTOMOBILE", "'AUTOMOBILE' is already used"), ("van; Van", "twice")])
def test_add_refuses_empty_and_duplicate_phrases(text, message):
    classes = ClassList()
    classes.add("car; automobile")
    with pytest.raises(ClassNameError, match=message):
        classes.add(text)
    assert classes.ids() == [1] and classes.next_id == 2  # nothing changed, no id spent


def test_ids_are_never_reused_after_delete():
    classes = ClassList()
    a, b = classes.add("a"), classes.add("b")
    classes.remove(b.id)
    c = classes.add("c")
    assert c.id == 3 and c.color == class_color(3)
    classes.remove(a.id)
    classes.remove(c.id)
    assert classes.add("a").id == 4  # even with an empty list and the same name
    with pytest.raises(KeyError):
        classes.by_id(1)


def test_rename_keeps_id_and_colour_and_validates_against_the_others():
    classes = ClassList()
    car, tree = classes.add("car"), classes.add("tree")
    classes.set_color(car.id, (1, 2, 3))
    renamed = classes.rename(car.id, "Car; vehicle")  # its own old phrase is fine
    assert (renamed.id, renamed.name, renamed.phrases, renamed.color) == (car.id, "Car", ["Car", "vehicle"], (1, 2, 3))
    with pytest.raises(ClassNameError, match="already used"):
        classes.rename(car.id, "TREE")
    with pytest.raises(ClassNameError):
        classes.rename(tree.id, "")
    assert classes.by_id(tree.id).name == "tree"


def test_move_hide_keys_and_observers():
    classes = ClassList()
    calls = []
    classes.changed.append(lambda: calls.append(1))
    ids = [classes.add(name).id for name in "abcdefghij"]  # 10 classes: only 9 keys
    classes.move(ids[0], 2)
    assert classes.ids()[:4] == [2, 3, 1, 4]
    classes.move(ids[0], 99)  # clamped: to the end
    assert classes.ids()[-1] == 1
    assert classes.at_key(1).name == "b" and classes.at_key(9).name == "j" and classes.at_key(10) is None
    assert classes.at_key(0) is None
    classes.set_hidden(2, True)
    assert classes.by_id(2).hidden
    with pytest.raises(ValueError):
        classes.set_color(2, (0, 0, 256))
    assert len(calls) == 10 + 2 + 1  # adds, moves, hide; a refused colour notifies nobody


def test_json_round_trip_keeps_everything_and_rejects_damage():
    classes = ClassList()
    classes.add("car; automobile")
    classes.add("tree")
    classes.remove(1)
    classes.add("sky")
    classes.set_hidden(2, True)
    classes.set_color(3, (9, 8, 7))
    again = ClassList.from_json(classes.to_json())
    assert again.to_json() == classes.to_json() and again.next_id == 4
    assert again.add("road").id == 4
    bad = classes.to_json()
    bad["classes"][0]["id"] = 3  # two classes with id 3
    with pytest.raises(ValueError):
        ClassList.from_json(bad)
    bad = classes.to_json()
    bad["next_class_id"] = 3  # would hand out id 3 again
    with pytest.raises(ValueError):
        ClassList.from_json(bad)


def test_find_by_name_then_phrase():
    classes = ClassList()
    classes.add("car; automobile")
    assert classes.find(" CAR ").id == 1 and classes.find("Automobile").id == 1 and classes.find("bus") is None


@pytest.mark.parametrize("text", ["big  car", "Big Car; lorry", "cat; cat", "lorry; truck"])
def test_check_gives_the_engines_verdict_and_changes_nothing(text):
    from chimera_engine.class_names import parse_classes

    classes = ClassList()
    classes.add("big car")

    def accepted(check):
        try:
            check()
        except ClassNameError:
            return False
        return True

    assert accepted(lambda: classes.check(text)) == accepted(lambda: parse_classes(classes.prompts() + [text]))
    assert classes.prompts() == ["big car"] and classes.next_id == 2
    assert classes.check("big car", exclude=1) == ["big car"]  # its own phrases are fine on a rename
