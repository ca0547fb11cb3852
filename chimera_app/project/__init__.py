"""The project store, Qt-free: class list, label documents with undo, durable storage, exports.

    from chimera_app.project import Project
    with Project.open("photos/") as project:
        doc = project.load_document(project.images()[0])
        patch = doc.paint(region, class_id)
        project.record(rel, doc, patch)        # durable at once (journal, fsync)
        project.save_document(rel, doc)        # atomic PNGs; the journal forgets rel

The on-disk format is described in ``store.py``.
"""

from chimera_app.project.classes import ClassList, LabelClass
from chimera_app.project.document import (
           ImageState,
           LabelDocument,
           Patch,
           Provenance,
           Region,
           UndoStack,
)
from chimera_app.project.errors import ProjectError, ProjectLockedError
from chimera_app.project.store import Project

__all__ = [
           "ClassList",
           "ImageState",
           "LabelClass",
           "LabelDocument",
           "Patch",
           "Project",
           "ProjectError",
           "ProjectLockedError",
           "Provenance",
           "Region",
           "UndoStack",
]
