"""The distribution's import names: every package folder is installed, and only under chimera_* names."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"chimera_app": "chimera_app", "chimera_engine": "engine", "chimera_trainer": "trainer",
           "chimera_resources": "resources"}


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_installed_under_its_chimera_name():
    expected = set()
    for name, folder in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            expected.add(".".join((name, *parts)))
    assert set(_setuptools()["packages"]) == expected


def test_no_generic_top_level_import_names():
    setuptools = _setuptools()
    top = {p.split(".")[0] for p in setuptools["packages"]}
    assert all(name.startswith("chimera_") for name in top), top
    assert {k: v for k, v in setuptools["package-dir"].items()} == {k: v for k, v in FOLDERS.items() if k != v}


def test_installed_packages_resolve_to_the_folders():
    import chimera_engine
    import chimera_resources
    import chimera_trainer

    for module, folder in ((chimera_engine, "engine"), (chimera_trainer, "trainer"), (chimera_resources, "resources")):
        assert Path(module.__file__).resolve().parent == (REPO / folder).resolve()
