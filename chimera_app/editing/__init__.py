"""Qt-free editing: tools that turn input geometry into label regions, and uncertainty ranking."""

from chimera_app.editing.tools import brush, empty_region, flood, polygon, rectangle
from chimera_app.editing.uncertainty import next_region, uncertain_regions

__all__ = [
    "brush",
    "empty_region",
    "flood",
    "next_region",
    "polygon",
    "rectangle",
    "uncertain_regions",
]
