"""The Qt-free dataset report: per-class pixels (and a person's share), images, mean model
confidence, state counts, images never touched, Markdown."""

import numpy as np

from chimera_app.project.document import ImageState, Region
from chimera_app.project.store import Project
from chimera_app.report import build_report
from tests.chimera_app.test_main_window import write_images


def test_report_counts_pixels_confidence_and_states(tmp_path):
    folder = write_images(tmp_path / "images", n=3, size=(10, 20))
    with Project.open(folder) as project:
        sky, road, _unused = (project.classes.add(n).id for n in ("sky", "road", "car"))
        ids = np.full((10, 20), sky, np.uint16)
        ids[5:] = road
        confidence = np.full((10, 20), 0.8, np.float32)
        confidence[5:] = 0.4
        doc = project.load_document("img0.png")
        doc.set_prediction(ids, confidence)
        doc.paint(Region(0, 0, np.ones((2, 20), bool)), road)  # 40 sky pixels painted road by a person
        project.save_document("img0.png", doc)
        doc = project.load_document("img1.png")
        doc.set_prediction(ids, confidence)
        doc.state = ImageState.VERIFIED
        project.save_document("img1.png", doc)
        progress = []
        report = build_report(project, progress=lambda done, total: progress.append((done, total)))
        markdown = report.to_markdown("photos")
    assert progress[-1] == (3, 3)
    assert report.states == {ImageState.VERIFIED: 1, ImageState.IN_PROGRESS: 1, ImageState.PREDICTED: 0,
                             ImageState.UNLABELED: 1}
    assert report.never_touched == ["img2.png"] and report.unreadable == []
    stats = {c.name: c for c in report.classes}
    assert stats["sky"].pixels == 2 * 100 - 40 and stats["road"].pixels == 2 * 100 + 40
    assert stats["road"].human_pixels == 40 and stats["sky"].human_pixels == 0
    assert stats["sky"].images == stats["road"].images == 2 and stats["car"].pixels == 0
    # The saved confidence map is 8-bit: 0.8 and 0.4 come back within 1/255.
    assert abs(stats["sky"].mean_confidence - 0.8) < 0.005 and abs(stats["road"].mean_confidence - 0.4) < 0.005
    assert stats["car"].mean_confidence is None
    assert markdown.startswith("# photos\n") and "| road | 2 | 240 |" in markdown and "- img2.png" in markdown
