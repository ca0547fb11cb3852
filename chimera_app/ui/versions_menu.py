"""Model → Versions: the project's fine-tuned versions with their held-out metrics and date, the
one in use checked; a click switches to it, and the "Base model" entry rolls back to the project's
own model. The rule (the index's ``active`` follows what the engine loaded) and all file access are
in ``chimera_app.service.versions``; this module builds the menu and asks the window to load.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu

from chimera_app.service.versions import list_versions, record_in_use
from chimera_engine.errors import ChimeraError

__all__ = ["ModelVersionsMenu"]


def _short(model: str) -> str:
    """A model name for a menu: a checkpoint path by its file name."""
    return Path(model).name if model.endswith(".safetensors") else model


class ModelVersionsMenu(QObject):
    """Owns ``menu`` (filled each time it opens) and the switch in flight."""

    def __init__(self, window, menu: QMenu):
        super().__init__(window)
        self.window, self.menu = window, menu
        self.actions: dict[str | None, QAction] = {}  # version name (None: the base model) → its entry
        self._pending: tuple[str, bool] | None = None  # (model being loaded for a switch, re-pre-label after)
        menu.setToolTipsVisible(True)
        menu.aboutToShow.connect(self.fill)

    def fill(self) -> None:
        self.menu.clear()
        self.actions = {}
        project = self.window.project
        if project is None:
            self.menu.addAction("(open a folder first)").setEnabled(False)
            return
        try:
            versions, active = list_versions(project.data_dir)
        except ChimeraError as error:  # a damaged index: say so, offer nothing that would write it
            self.menu.addAction(f"(cannot read the versions: {error})").setEnabled(False)
            return
        group = QActionGroup(self.menu)
        group.setExclusive(True)
        base = project.model
        entry = self._add(group, None, f"Base model: {_short(base)}" if base else "Base model: none chosen yet",
                          "Roll back to the project's own model (Model → Choose model…), not fine-tuned here",
                          checked=active is None)
        entry.setEnabled(bool(base))
        if versions:
            self.menu.addSeparator()
        for version in versions:
            tip = (f"Fine-tuned from {version.base} on {version.train_images} verified images, measured on "
                   f"{version.held_out_images} held out; {version.checkpoint}")
            self._add(group, version.name, version.label(), tip, checked=version.name == active)
        if not versions:
            self.menu.addAction("(no fine-tuned versions yet: Model → Improve model…)").setEnabled(False)

    def _add(self, group: QActionGroup, name: str | None, text: str, tip: str, checked: bool) -> QAction:
        action = QAction(text, self.menu, checkable=True)
        action.setChecked(checked)
        action.setToolTip(tip)
        action.setStatusTip(tip)
        action.triggered.connect(lambda *_, n=name: self.switch(n))
        group.addAction(action)
        self.menu.addAction(action)
        self.actions[name] = action
        return action

    # -- switching ------------------------------------------------------------------------------
    def switch(self, name: str | None, prelabel: bool = False) -> None:
        """Load version ``name`` (None: the base model, a rollback); once loaded the index records
        it, and with ``prelabel`` the images nobody verified are pre-labelled again."""
        w = self.window
        project = w.project
        if project is None:
            return
        try:
            model = self._model_of(project, name)
        except ChimeraError as error:
            w.statusBar().showMessage(str(error), 8000)
            return
        self._pending = (model, prelabel)
        if model == w.model_in_use and model == w.model_name:  # already in use: just record it
            self.model_loaded(model)
            return
        w.load_model(model)

    @staticmethod
    def _model_of(project, name: str | None) -> str:
        if name is None:
            if not project.model:
                raise ChimeraError("the project has no base model yet: choose one in Model → Choose model…")
            return project.model
        versions, _ = list_versions(project.data_dir)
        version = next((v for v in versions if v.name == name), None)
        if version is None:
            raise ChimeraError(f"no model version '{name}' in this project")
        if not version.checkpoint.is_file():
            raise ChimeraError(f"{name}'s checkpoint {version.checkpoint} is missing")
        return str(version.checkpoint)

    def model_loaded(self, model: str) -> str | None:
        """The engine loaded ``model``: record it in the index; returns its version name, or None
        when it is not one of the project's versions (then it is the project's own model choice)."""
        w = self.window
        pending = self._pending
        if pending is not None and pending[0] == model:
            self._pending = None
        version = None
        if w.project is not None:
            try:
                version = record_in_use(w.project.data_dir, model)
            except (ChimeraError, OSError) as error:
                w.statusBar().showMessage(f"Could not record the model version in use: {error}", 8000)
        if pending is not None and pending[0] == model:
            what = version or f"the base model ({_short(model)})"
            if pending[1]:
                w.with_controller("prelabel")
                w.statusBar().showMessage(f"Now using {what}; pre-labelling the images nobody verified", 8000)
            else:
                w.statusBar().showMessage(f"Now using {what}. Model → Re-pre-label images nobody verified "
                                          "updates the rest of the folder", 8000)
        return version

    def load_failed(self) -> None:
        """The load of a switch failed: the model in use and the index stay as they were."""
        self._pending = None
