"""The project-file reader both the app's store and the trainer use: project.json's header, journal
records (and where a torn tail ends them), commit.json in both its forms. The app and the trainer
must refuse and accept the same files, so the last tests open one damaged project with each."""

import json
import zlib

import numpy as np
import pytest

from chimera_app.project import Project, ProjectError
from chimera_engine.formats.project_files import (
    FRAME_SIZE,
    JournalRecord,
    ProjectFileError,
    encode_record,
    read_commit,
    read_journal,
    read_project_json,
    scan_journal,
)
from chimera_trainer.project_data import ProjectDataError, read_snapshot


def _record(image: str, value: int, shape=(3, 4), y0=1, x0=2, state="in-progress") -> JournalRecord:
    labels = np.full(shape, value, np.uint16)
    labels[0, 0] = 300  # above 255: the labels are 16 bit
    return JournalRecord(image, y0, x0, labels, np.full(shape, 2, np.uint8), state, (10, 12))


@pytest.mark.parametrize("text, message", [
    ("{not json", "cannot read"),
    ("[1, 2]", "not a Chimera project"),
    ('{"format": "other", "version": 1}', "not a Chimera project"),
    ('{"format": "chimera-project"}', "newer Chimera"),
    ('{"format": "chimera-project", "version": 2}', "newer Chimera"),
    ("[" * 100_000 + "]" * 100_000, "cannot read"),
])
def test_project_json_that_is_not_ours_is_refused(tmp_path, text, message):
    path = tmp_path / "project.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProjectFileError, match=message):
        read_project_json(path)


def test_project_json_of_this_version_is_read(tmp_path):
    path = tmp_path / "project.json"
    path.write_text(json.dumps({"format": "chimera-project", "version": 1, "model": "m"}), encoding="utf-8")
    assert read_project_json(path)["model"] == "m"


def test_journal_records_round_trip_and_a_torn_tail_ends_the_journal(tmp_path):
    records = [_record("a.png", 1), _record("b/c.jpg", 7, shape=(2, 2)), _record("a.png", 9, state="human-verified")]
    blobs = [encode_record(r) for r in records]
    torn = encode_record(_record("a.png", 5))[:-3]  # the writer was killed mid-append
    path = tmp_path / "journal.log"
    path.write_bytes(b"".join(blobs) + torn)

    found, end = scan_journal(path.read_bytes())
    assert end == sum(len(b) for b in blobs)
    assert [(image, state) for _, _, image, state in found] == [
        ("a.png", "in-progress"), ("b/c.jpg", "in-progress"), ("a.png", "human-verified")]
    read = read_journal(path)
    assert list(read) == ["a.png", "b/c.jpg"]
    for got, want in zip(read["a.png"] + read["b/c.jpg"], [records[0], records[2], records[1]]):
        assert (got.image, got.y0, got.x0, got.state, got.image_shape) == \
               (want.image, want.y0, want.x0, want.state, want.image_shape)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.provenance, want.provenance)
        assert got.labels.dtype == np.uint16 and got.provenance.dtype == np.uint8
    assert read_journal(tmp_path / "missing.log") == {}


def test_an_intact_record_we_cannot_decode_ends_the_journal():
    good = encode_record(_record("a.png", 1))
    bad = bytearray(encode_record(_record("b.png", 1)))
    header_len = int.from_bytes(bad[FRAME_SIZE:FRAME_SIZE + 4], "little")
    header = bytes(bad[FRAME_SIZE + 4:FRAME_SIZE + 4 + header_len]).replace(b'"y0": 1', b'"y0":"x"')
    payload = len(header).to_bytes(4, "little") + header + bytes(bad[FRAME_SIZE + 4 + header_len:])
    frame = b"CJR1" + len(payload).to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little")
    found, end = scan_journal(good + frame + payload + good)
    assert [image for _, _, image, _ in found] == ["a.png"] and end == len(good)


def test_commit_json_in_both_forms(tmp_path):
    path = tmp_path / "commit.json"
    assert read_commit(path) is None
    path.write_text(json.dumps({"entries": {"a.png": {"state": "human-verified"}},
                                "renames": [["s/1", "labels/a.png.png"]], "deletes": ["confidence/a.png.png"]}))
    assert read_commit(path) == {"entries": {"a.png": {"state": "human-verified"}},
                                 "renames": [["s/1", "labels/a.png.png"]], "deletes": ["confidence/a.png.png"]}
    path.write_text(json.dumps({"image": "a.png", "entry": {"state": "predicted"}, "renames": [["s/1", "t"]]}))
    assert read_commit(path) == {"entries": {"a.png": {"state": "predicted"}}, "renames": [["s/1", "t"]],
                                 "deletes": []}


@pytest.mark.parametrize("text", ["{torn", "[]", '{"entries": 3, "renames": []}', '{"entries": {}, "renames": [1]}',
                                  '{"entries": {"a": "x"}, "renames": []}'])
def test_damaged_commit_json_is_refused(tmp_path, text):
    path = tmp_path / "commit.json"
    path.write_text(text)
    with pytest.raises(ProjectFileError, match="unfinished save"):
        read_commit(path)


@pytest.mark.parametrize("text, message", [
    ('{"format": "chimera-project", "version": 2}', "newer Chimera"),
    ('{"format": "elsewhere"}', "not a Chimera project"),
])
def test_the_app_and_the_trainer_refuse_the_same_project_file(tmp_path, text, message):
    (tmp_path / ".chimera").mkdir()
    (tmp_path / ".chimera" / "project.json").write_text(text)
    with pytest.raises(ProjectError, match=message) as app:
        Project.open(tmp_path)
    with pytest.raises(ProjectDataError, match=message) as trainer:
        read_snapshot(tmp_path)
    assert str(trainer.value) in str(app.value)  # the app adds that the file was left as it is
