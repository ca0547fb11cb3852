"""Every keyboard shortcut and mouse gesture of the app, as data. Qt-free.

The main window gives each of its actions the keys ``keys_for(action)`` returns, and
``ShortcutSheet`` (dialogs.py) lists ``SHORTCUTS``, so what the sheet says and what the keys do cannot
drift apart (a test checks that every ``window_shortcuts()`` row has its action in the window). Keys are
``QKeySequence`` portable text ("Ctrl+Shift+Z"); an action may have several ("Ctrl+Y" for redo).

Scopes: ``WINDOW`` rows are window-wide actions the main window binds; ``CLASS_PANEL`` rows are
handled by the class panel itself while it has focus (they must not collide with window keys);
``MOUSE`` rows are gestures of the canvas, listed for the reader only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CLASS_PANEL",
    "GROUPS",
    "MOUSE",
    "SHORTCUTS",
    "WINDOW",
    "Shortcut",
    "by_action",
    "keys_for",
    "window_shortcuts",
]

WINDOW, CLASS_PANEL, MOUSE = "window", "class panel", "mouse"
GROUPS = ("Images", "Edit", "Tools", "Classes", "View", "Mouse")  # the sheet's section order


@dataclass(frozen=True)
class Shortcut:
    action: str  # stable name the main window keys its QAction by
    keys: tuple[str, ...]  # QKeySequence portable text, or a gesture description for MOUSE rows
    description: str  # short enough for a menu entry
    group: str
    scope: str = WINDOW


def _class_keys() -> list[Shortcut]:
    return [Shortcut(f"class_{n}", (str(n),), f"Paint with class {n} (row {n} of the class list)", "Classes")
            for n in range(1, 10)]


SHORTCUTS: tuple[Shortcut, ...] = (
    # Images
    Shortcut("next_image", ("D",), "Next image (honours the file-list filter)", "Images"),
    Shortcut("previous_image", ("A",), "Previous image", "Images"),
    Shortcut("open_folder", ("Ctrl+O", "Ctrl+U"), "Open a folder of images", "Images"),
    Shortcut("save", ("Ctrl+S",), "Save now (edits are also saved automatically)", "Images"),
    Shortcut("export", ("Ctrl+E",), "Export the labels (COCO JSON or PNG masks)", "Images"),
    Shortcut("report", ("Ctrl+Shift+R",), "Dataset report: pixels and images per class, progress", "Images"),
    Shortcut("quit", ("Ctrl+Q",), "Quit (everything is already saved)", "Images"),
    Shortcut("next_uncertain", ("N",), "Jump to the next most uncertain region", "Images"),
    Shortcut("prelabel", ("Ctrl+L",), "Pre-label every image not human-verified", "Images"),
    # Edit
    Shortcut("undo", ("Ctrl+Z",), "Undo", "Edit"),
    Shortcut("redo", ("Ctrl+Shift+Z", "Ctrl+Y"), "Redo", "Edit"),
    Shortcut("cancel", ("Esc",), "Cancel the polygon or stroke in progress", "Edit"),
    Shortcut("accept_image", ("Ctrl+Return",), "Accept the whole prediction (the image becomes verified)", "Edit"),
    Shortcut("accept_class", ("Ctrl+Shift+Return",), "Accept the prediction of the current class", "Edit"),
    Shortcut("toggle_verified", ("V", "Ctrl+Shift+V"),
             "Verified: mark the image checked and finished (again: not verified)", "Edit"),
    Shortcut("protect", ("Ctrl+Shift+P",), "Protect other classes from the brush and fill", "Edit"),
    # Tools
    Shortcut("brush", ("B",), "Brush", "Tools"),
    Shortcut("eraser", ("E",), "Eraser", "Tools"),
    Shortcut("fill", ("G",), "Bucket fill", "Tools"),
    Shortcut("polygon", ("P",), "Polygon (Shift or right button subtracts)", "Tools"),
    Shortcut("rectangle", ("R",), "Rectangle", "Tools"),
    Shortcut("brush_smaller", ("[",), "Smaller brush", "Tools"),
    Shortcut("brush_larger", ("]",), "Larger brush", "Tools"),
    # Classes
    *_class_keys(),
    Shortcut("class_add", ("Return",), "Add the class typed in the class field", "Classes", CLASS_PANEL),
    Shortcut("class_rename", ("F2",), "Rename the selected class (or double-click it)", "Classes", CLASS_PANEL),
    Shortcut("class_delete", ("Del",), "Delete the selected class (asks first)", "Classes", CLASS_PANEL),
    Shortcut("class_up", ("Alt+Up",), "Move the selected class up", "Classes", CLASS_PANEL),
    Shortcut("class_down", ("Alt+Down",), "Move the selected class down", "Classes", CLASS_PANEL),
    # View
    Shortcut("toggle_masks", ("T",), "Show / hide the masks", "View"),
    Shortcut("toggle_outlines", ("O",), "Show / hide class outlines", "View"),
    Shortcut("toggle_confidence", ("C",), "Show / hide the low-confidence overlay", "View"),
    Shortcut("toggle_provenance", ("M",), "Hatch the pixels the model decided (not yet checked by a person)",
             "View"),
    Shortcut("zoom_in", ("Ctrl++", "Ctrl+="), "Zoom in", "View"),
    Shortcut("zoom_out", ("Ctrl+-",), "Zoom out", "View"),
    Shortcut("fit", ("Ctrl+0",), "Fit the image to the window", "View"),
    Shortcut("actual_size", ("Ctrl+1",), "Zoom to 100 %", "View"),
    Shortcut("shortcut_sheet", ("F1",), "Show this list of shortcuts", "View"),
    # Mouse (the canvas handles these itself)
    Shortcut("wheel_zoom", ("Wheel", "Ctrl+Wheel"), "Zoom at the cursor", "Mouse", MOUSE),
    Shortcut("drag_pan", ("Space+drag", "Middle-drag"), "Pan", "Mouse", MOUSE),
    Shortcut("accept_region", ("Ctrl+click",), "Accept the prediction of the clicked region", "Mouse", MOUSE),
    Shortcut("polygon_subtract", ("Shift+click", "Right-click"), "Polygon points that subtract", "Mouse",
             MOUSE),
)


def window_shortcuts() -> list[Shortcut]:
    """The rows the main window binds to QActions (one action per row, all of its keys)."""
    return [s for s in SHORTCUTS if s.scope == WINDOW]


def by_action(action: str) -> Shortcut:
    for s in SHORTCUTS:
        if s.action == action:
            return s
    raise KeyError(f"no shortcut row for action {action!r}")


def keys_for(action: str) -> tuple[str, ...]:
    """The keys of a window action; () for an action that has none (e.g. "Export…")."""
    return next((s.keys for s in SHORTCUTS if s.action == action and s.scope == WINDOW), ())
