"""Errors a user can cause. Each carries a message meant to be shown as it is.

Programming errors stay ordinary exceptions (TypeError, ValueError, AssertionError) so that tests
fail loudly; the classes here are for bad files, bad names and missing weights, which the CLI and the
app report and survive.
"""


class ChimeraError(Exception):
    """Base class of every error a user can cause and the app can report."""


class ImageLoadError(ChimeraError):
    """An image file is missing, unreadable, corrupt or in an unsupported format."""


class ClassNameError(ChimeraError):
    """A class list is empty, has an empty name, or names the same phrase twice."""


class ModelNameError(ChimeraError):
    """A model name does not match any known model, architecture or checkpoint path."""


class WeightsNotFoundError(ChimeraError):
    """Pretrained weights are neither cached nor downloadable (offline, or the tag does not exist)."""


class CheckpointError(ChimeraError):
    """A checkpoint file is missing, truncated, of the wrong kind, or does not match its config."""
