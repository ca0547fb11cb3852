"""Errors of the project store a user can cause (a damaged file, a project already open elsewhere).

Both derive from chimera_engine.ChimeraError, so the app and chimera-label show their message as it is.
"""

from __future__ import annotations

from chimera_engine.errors import ChimeraError


class ProjectError(ChimeraError):
    """A project file is unreadable, damaged or does not fit its image; nothing was overwritten."""


class ProjectLockedError(ProjectError):
    """The project is open in another Chimera (another process, or this one); names the holder."""
