"""``benchmarks/shapes_distillation.py``: per-shape measurements of what distillation passed on."""

import collections
import json

from chimera_trainer.shapes.world import sample
from tests.trainer.benchmark_scripts import load_benchmark


def test_each_single_shape_image_is_counted_once_under_its_class_with_bounded_measurements(tmp_path):
    bench = load_benchmark("shapes_distillation")
    out = tmp_path / "distillation.json"
    report = bench.main(["shapes-chimera", "--images", "8", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    shapes = dict(report["models"]["shapes-chimera"])
    teachers = shapes.pop("teachers")
    assert set(teachers) == {"same_shape_cos", "other_shape_cos"}
    assert all(v is None or -1 <= v <= 1 for v in teachers.values())
    truth = collections.Counter(sample(bench.SEED, i, 64, min_objects=1, max_objects=1).shapes[0].name
                                for i in range(8))
    assert {name: row["images"] for name, row in shapes.items()} == dict(truth)
    for row in shapes.values():
        assert 0 <= row["teacher_names_it"] <= 1 and 0 <= row["region_names_it"] <= 1
        assert -1 <= row["cos_region_teacher"] <= 1 and -1 <= row["cos_selected_teacher"] <= 1
        assert -2 <= row["teacher_margin"] <= 2 and -2 <= row["region_margin"] <= 2
        # the teacher names its shape exactly when its margin over every other name is positive
        if row["images"] == 1:
            assert row["teacher_names_it"] == (row["teacher_margin"] > 0)
