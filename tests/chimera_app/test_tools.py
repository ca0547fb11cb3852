"""Editing tools and uncertainty ranking: exactly which pixels each one selects."""

import math

import numpy as np
import pytest

from chimera_app.editing import tools
from chimera_app.editing.uncertainty import next_region, uncertain_regions
from chimera_app.project.document import Provenance, Region


def full(region: Region, shape) -> np.ndarray:
    """The region as a whole-image boolean mask (checks it lies inside the image too)."""
    y0, x0, y1, x1 = region.bbox
    assert 0 <= y0 <= y1 <= shape[0] and 0 <= x0 <= x1 <= shape[1]
    out = np.zeros(shape, dtype=bool)
    out[y0:y1, x0:x1] = region.mask
    return out


def capsule_reference(shape, a, b, r) -> np.ndarray:
    """Slow, obvious reference: pixel centres within r of segment ab."""
    out = np.zeros(shape, dtype=bool)
    ax, ay = a
    bx, by = b
    for y in range(shape[0]):
        for x in range(shape[1]):
            px, py = x + 0.5, y + 0.5
            dx, dy = bx - ax, by - ay
            t = 0.0 if dx == dy == 0 else ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)
            t = min(max(t, 0.0), 1.0)
            out[y, x] = math.hypot(px - (ax + t * dx), py - (ay + t * dy)) <= r
    return out


def test_brush_on_a_horizontal_line_paints_the_capsule_exactly():
    region = tools.brush((12, 20), [(5.5, 5.5), (15.5, 5.5)], 1.0)
    expected = np.zeros((12, 20), dtype=bool)
    expected[5, 4:17] = True  # the centre row reaches one pixel past each end point
    expected[4, 5:16] = True  # rows above and below: only along the segment itself
    expected[6, 5:16] = True
    np.testing.assert_array_equal(full(region, (12, 20)), expected)
    assert region.bbox == (4, 4, 7, 17)  # tight bbox: no empty margin to patch and repaint


def test_brush_matches_the_reference_on_a_diagonal_polyline():
    shape = (40, 50)
    points = [(3.2, 4.7), (20.9, 30.1), (44.0, 12.5)]
    region = tools.brush(shape, points, 3.3)
    expected = capsule_reference(shape, points[0], points[1], 3.3) | capsule_reference(
        shape, points[1], points[2], 3.3
    )
    np.testing.assert_array_equal(full(region, shape), expected)


def test_brush_click_with_a_tiny_radius_paints_the_pixel_under_it():
    region = tools.brush((10, 10), [(3.05, 7.95)], 0.1)
    expected = np.zeros((10, 10), dtype=bool)
    expected[7, 3] = True
    np.testing.assert_array_equal(full(region, (10, 10)), expected)


def test_brush_is_clipped_to_the_image():
    region = tools.brush((10, 10), [(-3.0, 0.5), (2.5, 0.5)], 1.5)
    mask = full(region, (10, 10))
    assert mask[0, :4].all() and mask[1, :4].all()  # rows 0-1, columns 0 up to 2.5 + 1.5 - 0.5
    assert not mask[:, 4:].any() and not mask[2:].any()
    assert tools.brush((10, 10), [(-20.0, -20.0), (-5.0, -9.0)], 2.0).is_empty
    assert tools.brush((10, 10), [], 2.0).is_empty


def test_flood_fills_a_ring_but_not_its_hole_and_not_diagonal_neighbours():
    labels = np.zeros((9, 9), dtype=np.uint16)
    labels[1:6, 1:6] = 3
    labels[2:4, 2:4] = 0  # the hole: 0 inside class 3
    labels[6, 6] = 3  # touches the ring only diagonally
    ring = tools.flood(labels, 1.5, 1.2)
    expected = np.zeros((9, 9), dtype=bool)
    expected[1:6, 1:6] = True
    expected[2:4, 2:4] = False
    np.testing.assert_array_equal(full(ring, labels.shape), expected)
    assert ring.bbox == (1, 1, 6, 6)

    hole = tools.flood(labels, 3.9, 2.0)  # the hole is not connected to the outer background
    expected_hole = np.zeros((9, 9), dtype=bool)
    expected_hole[2:4, 2:4] = True
    np.testing.assert_array_equal(full(hole, labels.shape), expected_hole)

    outside = full(tools.flood(labels, 8.5, 8.5), labels.shape)
    assert outside.sum() == 81 - 25 - 1 and not outside[6, 6]
    assert tools.flood(labels, 9.0, 0.0).is_empty and tools.flood(labels, -0.5, 3).is_empty


def test_polygon_selects_pixels_whose_centres_are_inside():
    square = tools.polygon((12, 14), [(2, 2), (10, 2), (10, 8), (2, 8)])
    expected = np.zeros((12, 14), dtype=bool)
    expected[2:8, 2:10] = True  # edges on pixel borders: 8 x 6 pixels, none twice
    np.testing.assert_array_equal(full(square, (12, 14)), expected)

    # A concave L (three squares of 4 x 4) and a triangle, with fractional vertices.
    ell = tools.polygon((12, 12), [(0, 0), (4, 0), (4, 4), (8, 4), (8, 8), (0, 8)])
    expected = np.zeros((12, 12), dtype=bool)
    expected[0:8, 0:4] = True
    expected[4:8, 4:8] = True
    np.testing.assert_array_equal(full(ell, (12, 12)), expected)

    tri = full(tools.polygon((10, 10), [(0, 0), (10, 0), (0, 10)]), (10, 10))
    yy, xx = np.mgrid[0:10, 0:10]
    np.testing.assert_array_equal(tri, (xx + 0.5) + (yy + 0.5) < 10)


def test_polygon_is_clipped_and_needs_three_points():
    region = tools.polygon((6, 6), [(-4, -4), (3, -4), (3, 3), (-4, 3)])
    expected = np.zeros((6, 6), dtype=bool)
    expected[0:3, 0:3] = True
    np.testing.assert_array_equal(full(region, (6, 6)), expected)
    assert tools.polygon((6, 6), [(1, 1), (4, 4)]).is_empty
    assert tools.polygon((6, 6), [(10, 10), (20, 10), (20, 20)]).is_empty


def test_rectangle_covers_touched_pixels_and_is_clipped_at_the_border():
    shape = (10, 12)
    region = tools.rectangle(shape, (9.5, 7.2), (20.0, 30.0))  # drag off the bottom-right corner
    expected = np.zeros(shape, dtype=bool)
    expected[7:, 9:] = True
    np.testing.assert_array_equal(full(region, shape), expected)
    assert region.bbox == (7, 9, 10, 12)

    reversed_drag = tools.rectangle(shape, (3.5, 2.5), (-5.0, -5.0))  # any corner order
    expected = np.zeros(shape, dtype=bool)
    expected[0:3, 0:4] = True
    np.testing.assert_array_equal(full(reversed_drag, shape), expected)

    assert full(tools.rectangle(shape, (4.2, 5.7), (4.2, 5.7)), shape).sum() == 1
    assert tools.rectangle(shape, (12.0, 0.0), (15.0, 4.0)).is_empty


def test_uncertain_regions_ranked_by_total_doubt_and_never_human():
    conf = np.ones((40, 40), dtype=np.float32)
    conf[0:10, 0:10] = 0.45  # big but mild: 100 * 0.55 = 55
    conf[20:25, 20:25] = 0.05  # small but severe: 25 * 0.95 = 23.75
    conf[30:38, 0:8] = 0.3  # 64 * 0.7 = 44.8
    conf[0:10, 30:40] = 0.0  # certain-looking doubt, but a human labelled it
    conf[35:38, 35:38] = 0.0  # 9 pixels: below min_area
    prov = np.full((40, 40), Provenance.MODEL, dtype=np.uint8)
    prov[0:10, 30:40] = Provenance.HUMAN
    regions = uncertain_regions(conf, prov, threshold=0.5, min_area=16)
    assert [r.bbox for r in regions] == [(0, 0, 10, 10), (30, 0, 38, 8), (20, 20, 25, 25)]
    assert all(r.mask.all() for r in regions)
    assert uncertain_regions(np.ones((5, 5), np.float32), np.zeros((5, 5), np.uint8)) == []
    with pytest.raises(ValueError):
        uncertain_regions(conf, prov[:10])


def test_next_region_cycles_and_handles_none():
    regions = [Region(0, 0, np.ones((1, 1), bool))] * 3
    assert next_region([], None) is None
    assert next_region(regions, None) == 0
    assert next_region(regions, 0) == 1
    assert next_region(regions, 2) == 0
    assert next_region(regions, 7) == 0  # the list shrank since: start again
