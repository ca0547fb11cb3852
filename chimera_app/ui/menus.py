"""The main window's menus and toolbar: every QAction, its keys (from shortcuts.py) and a tooltip
that says what it does, not only its name. Slots are the window's; this module only builds.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QLabel

from chimera_app.ui import shortcuts

__all__ = ["TOOLS", "build_menus", "build_toolbar"]

TOOLS = ("brush", "eraser", "fill", "polygon", "rectangle", "pan")
# Toolbar order: the work first, the view switches last, so a narrow window (1024 px) pushes the
# view switches (which have keys and a menu) into the overflow, never pre-label.
TOOLBAR = (*TOOLS, None, "accept_image", "accept_class", "toggle_verified", "protect", None,
           "min_confidence", "prelabel", "cancel_prelabel", "improve_model", None, "next_uncertain", "toggle_masks",
           "toggle_outlines", "toggle_confidence", "toggle_provenance")
SHORT_TEXT = {"accept_image": "Accept all", "accept_class": "Accept class", "toggle_verified": "Verified",
              "protect": "Protect", "cancel_prelabel": "Cancel", "next_uncertain": "Uncertain",
              "toggle_confidence": "Confidence", "toggle_provenance": "Model pixels", "prelabel": "Pre-label",
              "improve_model": "Improve"}


def _describe(name: str, text: str) -> str:
    """A tooltip: the shortcut table's description (more than the label) and the keys."""
    try:
        row = shortcuts.by_action(name)
    except KeyError:
        return text
    keys = ", ".join(QKeySequence(k).toString(QKeySequence.SequenceFormat.NativeText) for k in row.keys)
    return f"{row.description} ({keys})" if row.scope == shortcuts.WINDOW and keys else row.description


def add_action(window, menu, name: str, text: str, slot, checkable: bool = False, checked: bool = False,
               tip: str | None = None) -> QAction:
    """``tip``: the tooltip of an action without a row in the shortcut table (else its description)."""
    action = QAction(text, window, checkable=checkable)
    if checkable:
        action.setChecked(checked)
        action.toggled.connect(slot)
    else:
        action.triggered.connect(lambda *_: slot())
    keys = shortcuts.keys_for(name)
    if keys:
        action.setShortcuts([QKeySequence(k) for k in keys])
    action.setShortcutContext(Qt.WindowShortcut)
    action.setToolTip(tip or _describe(name, text))
    action.setStatusTip(tip or _describe(name, text))
    menu.addAction(action)
    window.addAction(action)  # shortcuts work while the menu bar is hidden too
    window.actions_by_name[name] = action
    return action


def build_menus(w) -> None:
    """``w`` is the MainWindow: its slots and widgets."""
    bar = w.menuBar()
    file = bar.addMenu("&File")
    add_action(w, file, "open_folder", "Open folder…", w.choose_folder)
    add_action(w, file, "open_demo", "Open the demo", w.open_demo)
    w.recent_menu = file.addMenu("Recent projects")
    w.recent_menu.aboutToShow.connect(w.fill_recent_menu)
    add_action(w, file, "save", "Save", w.save)
    file.addSeparator()
    add_action(w, file, "import_coco", "Import COCO JSON…", w.import_coco)
    add_action(w, file, "export", "Export…", w.export)
    add_action(w, file, "report", "Report…", w.show_report)
    file.addSeparator()
    add_action(w, file, "quit", "Quit", w.close)

    edit = bar.addMenu("&Edit")
    add_action(w, edit, "undo", "Undo", lambda: w.with_controller("undo"))
    add_action(w, edit, "redo", "Redo", lambda: w.with_controller("redo"))
    edit.addSeparator()
    add_action(w, edit, "accept_image", "Accept all", lambda: w.with_controller("accept_all"))
    add_action(w, edit, "accept_class", "Accept class", lambda: w.with_controller("accept_class"))
    add_action(w, edit, "toggle_verified", "Verified", lambda: w.with_controller("toggle_verified"))
    add_action(w, edit, "protect", "Protect others", w.set_protect, checkable=True)

    tool_menu = bar.addMenu("&Tools")
    group = QActionGroup(w)
    for name in TOOLS:
        action = add_action(w, tool_menu, name, name.capitalize(), lambda on, n=name: on and w.set_tool(n),
                            checkable=True, checked=name == "brush")
        group.addAction(action)
    tool_menu.addSeparator()
    add_action(w, tool_menu, "brush_smaller", "Smaller brush", lambda: w.scale_brush(1 / 1.25))
    add_action(w, tool_menu, "brush_larger", "Larger brush", lambda: w.scale_brush(1.25))
    add_action(w, tool_menu, "cancel", "Cancel", w.canvas.cancel)

    view = bar.addMenu("&View")
    canvas = w.canvas
    add_action(w, view, "toggle_masks", "Masks", lambda on: setattr(canvas, "show_masks", on),
               checkable=True, checked=True)
    add_action(w, view, "toggle_outlines", "Outlines", lambda on: setattr(canvas, "show_outlines", on),
               checkable=True)
    add_action(w, view, "toggle_confidence", "Confidence", lambda on: setattr(canvas, "show_confidence", on),
               checkable=True)
    add_action(w, view, "toggle_provenance", "Model pixels", w.set_provenance_view, checkable=True)
    view.addSeparator()
    add_action(w, view, "zoom_in", "Zoom in", canvas.zoom_in)
    add_action(w, view, "zoom_out", "Zoom out", canvas.zoom_out)
    add_action(w, view, "fit", "Fit to window", canvas.fit)
    add_action(w, view, "actual_size", "100 %", canvas.actual_size)

    go = bar.addMenu("&Go")
    add_action(w, go, "next_image", "Next image", w.file_list.next)
    add_action(w, go, "previous_image", "Previous image", w.file_list.previous)
    add_action(w, go, "next_uncertain", "Next uncertain", lambda: w.with_controller("next_uncertain"))
    for n in range(1, 10):
        add_action(w, go, f"class_{n}", f"Class {n}", lambda n=n: w.class_panel.select_key(n))

    model = bar.addMenu("&Model")
    add_action(w, model, "choose_model", "Choose model…", w.choose_model)
    add_action(w, model, "improve_model", "Improve model…", w.improve_model.start,
               tip="Fine-tune the model on this folder's verified images (in the background; "
                   "you choose whether to switch at the end)")
    w.versions_menu = model.addMenu("Versions")
    add_action(w, model, "reprelabel", "Re-pre-label images nobody verified", lambda: w.with_controller("prelabel"),
               tip="Pre-label every image that is not human-verified again with the model in use "
                   "(pixels a person decided stay)")
    model.addSeparator()
    add_action(w, model, "prelabel", "Pre-label folder", lambda: w.with_controller("prelabel"))
    add_action(w, model, "resume_prelabel", "Resume pre-label", lambda: w.with_controller("prelabel", True))
    add_action(w, model, "cancel_prelabel", "Cancel pre-label", lambda: w.with_controller("cancel_prelabel"))

    help_menu = bar.addMenu("&Help")
    add_action(w, help_menu, "getting_started", "Getting started", w.show_guide)
    add_action(w, help_menu, "shortcut_sheet", "Keyboard shortcuts", w.show_shortcuts)


def build_toolbar(w) -> None:
    """The tools and the switches people reach for most, one click away, with short labels (the
    menus keep the long ones)."""
    bar = w.addToolBar("Tools")
    bar.setObjectName("Tools")
    bar.setToolButtonStyle(Qt.ToolButtonTextOnly)
    w.toolbar = bar
    for name in TOOLBAR:
        if name is None:
            bar.addSeparator()
        elif name == "min_confidence":
            label = QLabel(" Unlabeled below ")
            label.setToolTip(w.min_confidence.toolTip())
            w.min_confidence_label = label
            bar.addWidget(label)
            bar.addWidget(w.min_confidence)
        else:
            action = w.actions_by_name[name]
            if name in SHORT_TEXT:
                action.setIconText(SHORT_TEXT[name])  # what a text-only tool button shows
            bar.addAction(action)
