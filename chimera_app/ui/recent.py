"""Recently opened image folders, newest first, kept in a small JSON file. Qt-free.

The file lives in the user's config folder (``CHIMERA_CONFIG_DIR`` overrides it, for tests and
portable setups). A damaged or unwritable file never stops the app: the list is then empty, or
simply not remembered.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["MAX_RECENT", "RecentProjects"]

MAX_RECENT = 8


def _config_dir() -> Path:
    override = os.environ.get("CHIMERA_CONFIG_DIR")
    if override:
        return Path(override)
    import platformdirs

    return platformdirs.user_config_path("chimera")


class RecentProjects:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or _config_dir() / "recent.json"

    def folders(self) -> list[Path]:
        """Remembered folders that still exist, newest first."""
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(entries, list):
            return []
        folders = [Path(e) for e in entries if isinstance(e, str)]
        return [f for f in folders if f.is_dir()][:MAX_RECENT]

    def add(self, folder: Path) -> None:
        folder = Path(folder).resolve()
        entries = [str(folder)] + [str(f) for f in self.folders() if f.resolve() != folder]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(entries[:MAX_RECENT], indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only home: the list is a convenience, never a reason to fail
