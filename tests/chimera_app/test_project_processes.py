"""Other processes: the lock names its holder and dies with it; a SIGKILL loses no recorded edit."""

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from chimera_app.project import Project, ProjectLockedError, Region

H, W = 48, 64
EDITS = 120

# ``import chimera_engine`` is lazy (no torch until a model is built), so the child starts in ~0.3 s.
PRELUDE = """
import sys
import numpy as np
from chimera_app.project import Project, Region
"""



def edit(doc, i):
    """Edit number ``i``: a pure function of ``i``, so the parent can redo the child's edits."""
    rng = np.random.default_rng(i)
    y, x = int(rng.integers(0, H - 12)), int(rng.integers(0, W - 12))
    region = Region(y, x, rng.random((12, 12)) < 0.7)
    if i % 5 == 4:
        return doc.accept_prediction(region=region)
    return doc.paint(region, int(rng.integers(0, 4)), protect=[3] if i % 3 == 0 else [])


CHILD_EDITS = PRELUDE + f"H, W = {H}, {W}\n" + inspect.getsource(edit) + f"""
project = Project.open(sys.argv[1])
doc = project.load_document("a.png")
for i in range({EDITS}):
    patch = edit(doc, i)
    if patch is not None:
        project.record("a.png", doc, patch)
    if i % 7 == 6:
        project.save_document("a.png", doc)  # the kill may land in a save too
    print(i, flush=True)
import time
time.sleep(60)
"""

CHILD_HOLD = PRELUDE + """
project = Project.open(sys.argv[1])
print("open", flush=True)
sys.stdin.readline()
"""


def start(script: str, root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(root)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def root(tmp_path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((H, W, 3), np.uint8))
    with Project.open(images) as project:
        for name in ("a", "b", "c"):
            project.classes.add(name)
        doc = project.load_document("a.png")
        ids = np.zeros((H, W), np.uint16)
        ids[:, : W // 2], ids[:, W // 2:] = 1, 2
        doc.set_prediction(ids, np.full((H, W), 0.5, np.float32))
        project.save_document("a.png", doc)
    return images


def test_the_lock_names_another_holder_and_is_released_when_it_is_killed(root):
    child = start(CHILD_HOLD, root)
    try:
        assert child.stdout.readline().strip() == "open", child.stderr.read()
        with pytest.raises(ProjectLockedError, match=rf"pid {child.pid} on \S+"):
            Project.open(root)
    finally:
        child.kill()  # SIGKILL: no clean-up code runs in the child
        child.wait(timeout=30)
    Project.open(root).close()  # the OS released the lock with the process


# Reported 19 and 54: the kill lands while edit 20 / 55 is recorded and then saved (i % 7 == 6).
@pytest.mark.parametrize("kill_after", [19, 54, 90])
def test_a_killed_session_loses_no_recorded_edit(root, kill_after):
    with Project.open(root) as project:
        doc = project.load_document("a.png")
    states = [(doc.labels.copy(), doc.provenance.copy(), doc.state)]
    for i in range(EDITS):
        edit(doc, i)
        states.append((doc.labels.copy(), doc.provenance.copy(), doc.state))  # states[i + 1]: after edit i

    child = start(CHILD_EDITS, root)
    try:
        reported = -1
        while reported < kill_after:
            line = child.stdout.readline()
            assert line, child.stderr.read()
            reported = int(line)
    finally:
        child.kill()
        child.wait(timeout=30)

    with Project.open(root) as project:
        again = project.load_document("a.png")
    # Every edit reported as recorded is there; the child may have recorded a few more before it
    # died (and not yet said so), so the document must equal the state after some later edit.
    matches = [i for i in range(reported + 1, EDITS + 1)
               if np.array_equal(again.labels, states[i][0]) and np.array_equal(again.provenance, states[i][1])
               and again.state == states[i][2]]
    assert matches, f"the reopened document matches no state at or after edit {reported}"
