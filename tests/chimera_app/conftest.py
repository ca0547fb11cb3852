"""App tests never read or write the user's config (recent projects, the first-run guide marker)."""

import os

import pytest


@pytest.fixture(autouse=True)
def app_config_dir(tmp_path_factory):
    """A fresh config folder per test with the first-run guide already dismissed (a test of the
    guide removes the marker). Not through ``monkeypatch``: an autouse fixture holding it would
    keep a test's own patches alive until after that test's other fixtures were torn down."""
    folder = tmp_path_factory.mktemp("config")
    (folder / "guide-dismissed").touch()
    before = os.environ.get("CHIMERA_CONFIG_DIR")
    os.environ["CHIMERA_CONFIG_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("CHIMERA_CONFIG_DIR", None)
    else:
        os.environ["CHIMERA_CONFIG_DIR"] = before
