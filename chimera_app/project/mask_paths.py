"""Where indexed PNG masks go in an export folder (``chimera-label --png-dir``, the project's PNG
export): the image's relative folder and stem, ``.png``. Qt-free, torch-free."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from chimera_engine.errors import ChimeraError

__all__ = ["check_png_collisions", "png_path"]


def png_path(png_dir: Path, file_name: str) -> Path:
    """Mask path for an image: same relative folder and stem, ``.png``."""
    return (Path(png_dir) / file_name).with_suffix(".png")


def check_png_collisions(names: Sequence[str]) -> None:
    """Two images with the same stem in one folder (``a.jpg``, ``a.png``) would share a mask file."""
    seen: dict[str, str] = {}
    for name in names:
        key = str(Path(name).with_suffix("")).casefold()
        if key in seen:
            raise ChimeraError(f"images {seen[key]!r} and {name!r} would both write the mask "
                               f"{Path(name).with_suffix('.png').as_posix()!r}; rename one or drop --png-dir")
        seen[key] = name
