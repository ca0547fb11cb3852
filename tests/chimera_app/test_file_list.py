"""FileList: states and counts, the filter, next/previous honouring it, sorting by uncertainty."""

import pytest
from PySide6.QtCore import Qt

from chimera_app.project.document import ImageState
from chimera_app.ui.file_list import SORT_NAME, SORT_UNCERTAINTY, FileList

U, P, V = ImageState.UNLABELED, ImageState.PREDICTED, ImageState.VERIFIED
STATES = {"a.png": U, "b.png": P, "c.png": V, "d/e.png": U, "f.png": P}
UNCERTAINTY = {"a.png": None, "b.png": 0.2, "c.png": 0.05, "d/e.png": None, "f.png": 0.6}


@pytest.fixture
def files(qtbot):
    widget = FileList()
    qtbot.addWidget(widget)
    widget.set_project(sorted(STATES), dict(STATES), UNCERTAINTY.get)
    widget.resize(300, 400)
    widget.show()
    qtbot.waitExposed(widget)
    shown = []
    widget.current_changed.connect(shown.append)
    widget.shown = shown
    return widget


def test_counts_and_state_changes(files):
    assert files.counts_label.text() == "1 / 5 verified · 0 in progress · 2 predicted · 2 unlabeled"
    assert files.filter_combo.itemText(1) == "Unlabeled (2)"
    files.set_state("a.png", "human-verified")  # the controller passes ImageState values
    assert files.state("a.png") == V
    assert files.counts_label.text().startswith("2 / 5 verified")


def test_next_and_previous_honour_the_filter(files):
    files.set_filter(U)
    assert files.visible_images() == ["a.png", "d/e.png"]
    assert files.next() == "a.png"  # nothing current yet: the first match
    assert files.next() == "d/e.png"  # b and c are skipped
    assert files.next() is None and files.current() == "d/e.png"  # the end: stays
    assert files.previous() == "a.png"
    assert files.previous() is None
    assert files.shown == ["a.png", "d/e.png", "a.png"]
    files.set_filter(None)
    assert files.next() == "b.png"


def test_the_open_image_stays_listed_until_the_user_moves_on(files):
    files.set_filter(U)
    files.select("a.png")
    rows = {files.list.item(r).data(Qt.ItemDataRole.UserRole): r for r in range(files.list.count())}
    files.set_state("a.png", V)  # verified while "Unlabeled" is shown
    assert not files.list.isRowHidden(rows["a.png"])
    assert files.list.isRowHidden(rows["b.png"])
    assert files.next() == "d/e.png"
    assert files.list.isRowHidden(rows["a.png"])
    assert files.previous() is None  # a.png no longer matches the filter


def test_sort_by_uncertainty_puts_the_most_uncertain_first_and_unpredicted_last(files):
    assert files.images() == ["a.png", "b.png", "c.png", "d/e.png", "f.png"]
    files.select("c.png")
    files.set_sort(SORT_UNCERTAINTY)
    assert files.images() == ["f.png", "b.png", "c.png", "a.png", "d/e.png"]
    assert files.current() == "c.png" and files.list.currentItem().data(Qt.ItemDataRole.UserRole) == "c.png"
    assert "60% uncertain" in files.list.item(0).text()
    assert files.next() == "a.png" and files.upcoming(5) == ["d/e.png"]
    assert files.shown == ["c.png", "a.png"]  # re-sorting did not count as a change of image
    files.set_sort(SORT_NAME)
    assert files.images()[0] == "a.png"


def test_uncertainty_sort_is_unavailable_without_a_source(qtbot):
    widget = FileList()
    qtbot.addWidget(widget)
    widget.set_project(["x.png"], {"x.png": U})
    assert not widget.sort_combo.model().item(1).isEnabled()
    widget.set_uncertainty_source(lambda rel: 0.5)
    widget.set_sort(SORT_UNCERTAINTY)
    assert widget.sort_mode() == SORT_UNCERTAINTY


def test_clicking_a_row_and_select(files, qtbot):
    rect = files.list.visualItemRect(files.list.item(2))
    qtbot.mouseClick(files.list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert files.shown == ["c.png"] and files.current() == "c.png"
    assert files.select("c.png") and files.shown == ["c.png"]  # no change, no signal
    assert not files.select("missing.png")
    assert files.upcoming(2) == ["d/e.png", "f.png"]
