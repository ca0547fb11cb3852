"""The project's model-version index (shared by chimera-train finetune and the app): numbered
versions are never reused, switching and rolling back rewrite only ``active``, a failed write lists
nothing, a damaged index is refused."""

import json

import pytest

from chimera_engine.formats.model_versions import (VersionIndexError, active_checkpoint, add_version, read_index,
                                                   set_active)


def test_version_index_switches_rolls_back_and_never_reuses_a_name(tmp_path):
    def write(name, checkpoint, metrics):
        checkpoint.write_bytes(name.encode())
        metrics.write_text("{}")
        return {"alpha": 0.5}

    assert read_index(tmp_path)["versions"] == [] and active_checkpoint(tmp_path) is None
    assert add_version(tmp_path, write)["name"] == "v1"
    assert add_version(tmp_path, write, activate=True)["name"] == "v2"
    assert active_checkpoint(tmp_path) == tmp_path / "v2.safetensors"
    set_active(tmp_path, "v1")  # roll back
    assert active_checkpoint(tmp_path) == tmp_path / "v1.safetensors"
    set_active(tmp_path, None)  # back to the project's own model choice
    assert active_checkpoint(tmp_path) is None
    with pytest.raises(VersionIndexError):
        set_active(tmp_path, "v9")
    (tmp_path / "v3.safetensors").write_bytes(b"orphan of a killed run")  # files, not in the index

    def fail(name, checkpoint, metrics):
        raise OSError("disk full")

    with pytest.raises(OSError):
        add_version(tmp_path, fail)
    assert [v["name"] for v in read_index(tmp_path)["versions"]] == ["v1", "v2"]
    assert add_version(tmp_path, write)["name"] == "v4"
    assert (tmp_path / "v3.safetensors").read_bytes() == b"orphan of a killed run"


def test_a_damaged_or_newer_index_is_refused(tmp_path):
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(VersionIndexError, match="cannot read"):
        read_index(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "chimera-model-versions", "version": 99,
                                                     "versions": []}))
    with pytest.raises(VersionIndexError, match="newer Chimera"):
        read_index(tmp_path)
