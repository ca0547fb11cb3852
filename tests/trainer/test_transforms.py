"""The mmseg/ZegCLIP training pipeline: shapes, bounds, crop rule, padding, flips, seeding, alignment."""

import numpy as np
import pytest
import torch

from chimera_trainer.data import (
    Compose,
    Normalize,
    Pad,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    RandomResize,
    ToTensor,
    eval_pipeline,
    seed_worker,
    train_pipeline,
)

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def sample(h=60, w=80, seed=0, classes=5):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            "label": rng.integers(0, classes, (h, w)).astype(np.uint8), "name": "x"}


def test_random_resize_bounds_over_many_draws():
    rng = np.random.default_rng(0)
    step = RandomResize((2048, 512), (0.5, 2.0), rng=rng)
    shorts, longs = [], []
    for _ in range(300):  # 30x50: the short side binds (aspect 5/3 < 2048/512)
        out = step(sample(30, 50))
        h, w = out["label"].shape
        assert out["image"].shape == (h, w, 3) and out["image"].dtype == np.uint8
        assert out["label"].dtype == np.uint8 and out["name"] == "x"
        assert 256 <= h <= 1024 and w <= 2048 * 2 and abs(w / h - 5 / 3) < 0.02
        shorts.append(h)
    assert min(shorts) < 280 and max(shorts) > 1000  # the whole ratio range is drawn
    for _ in range(100):  # 10x100: the long side binds
        out = step(sample(10, 100))
        h, w = out["label"].shape
        assert 1024 <= w <= 4096 and h <= 0.5 * w / 4 + 1
        longs.append(w)
    assert min(longs) < 1200 and max(longs) > 3800
    # mmseg's rescale rule at a fixed ratio, and the nearest label keeps only input values
    assert RandomResize((2048, 512)).target_size(375, 500, 1.0) == (512, 683)
    assert RandomResize((2048, 512)).target_size(100, 1000, 0.5) == (102, 1024)
    out = RandomResize((64, 16), None)(sample(30, 50))
    assert out["label"].shape == (16, 27) and set(np.unique(out["label"])) <= set(range(5))


def test_random_resize_keeps_int64_labels():
    s = sample(20, 20)
    s["label"] = s["label"].astype(np.int64) * 100
    out = RandomResize((80, 40), None)(s)
    assert out["label"].dtype == np.int64 and set(np.unique(out["label"])) <= {0, 100, 200, 300, 400}


def _half_label(ignore=False):
    label = np.zeros((128, 128), np.uint8)
    label[:, 64:] = 1
    if ignore:
        label[:8] = 255
    return label


@pytest.mark.parametrize("ignore", [False, True])
def test_random_crop_respects_cat_max_ratio(ignore):
    label = _half_label(ignore)
    s = {"image": np.zeros((128, 128, 3), np.uint8), "label": label}

    def ok(crop):
        values, counts = np.unique(crop, return_counts=True)
        counts = counts[values != 255]
        return len(counts) > 1 and counts.max() / counts.sum() < 0.75

    rng = np.random.default_rng(0)
    with_rule = [ok(RandomCrop(64, 0.75)(s, rng=rng)["label"]) for _ in range(300)]
    without = [ok(RandomCrop(64, 1.0)(s, rng=rng)["label"]) for _ in range(300)]
    assert np.mean(with_rule) > 0.99  # fails only if 11 draws in a row fail (~0.5**11)
    assert 0.3 < np.mean(without) < 0.7


def _mmseg_random_crop(sample, size, cat_max_ratio, ignore_index, rng):
    """mmseg's RandomCrop transcribed directly (np.unique, every try judged), for the comparison below."""
    image, label = sample["image"], sample["label"]
    h, w = label.shape

    def bbox():
        off_h, off_w = int(rng.integers(0, max(h - size, 0) + 1)), int(rng.integers(0, max(w - size, 0) + 1))
        return off_h, off_h + size, off_w, off_w + size

    y1, y2, x1, x2 = bbox()
    for _ in range(10):
        values, counts = np.unique(label[y1:y2, x1:x2], return_counts=True)
        counts = counts[values != ignore_index]
        if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
            break
        y1, y2, x1, x2 = bbox()
    return image[y1:y2, x1:x2], label[y1:y2, x1:x2]


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_random_crop_equals_mmsegs_draw_for_draw(dtype):
    # The fast paths (a count per value for uint8 labels; one judgement where the image is no larger
    # than the crop) must crop the same and leave the random stream where mmseg's loop leaves it.
    world = np.random.default_rng(7)
    for case in range(300):
        h, w = (int(v) for v in world.choice([40, 64, 80, 130], 2))
        label = world.integers(0, world.choice([1, 2, 4]), (h, w)).astype(dtype)
        label[: int(world.integers(0, h)), : int(world.integers(0, w))] = world.choice([0, 3, 255])
        s = {"image": world.integers(0, 256, (h, w, 3)).astype(np.uint8), "label": label}
        ours_rng, ref_rng = np.random.default_rng(case), np.random.default_rng(case)
        out = RandomCrop(64, 0.75, 255)(s, rng=ours_rng)
        image, crop = _mmseg_random_crop(s, 64, 0.75, 255, ref_rng)
        assert np.array_equal(out["label"], crop) and np.array_equal(out["image"], image)
        assert ours_rng.random() == ref_rng.random()  # the next draw is the same: the streams agree


def test_random_crop_size_and_alignment():
    s = sample(100, 120)
    s["image"][..., 0] = s["label"] * 40  # red channel encodes the label
    out = RandomCrop((48, 64), 0.75, rng=np.random.default_rng(1))(s)
    assert out["image"].shape == (48, 64, 3) and out["label"].shape == (48, 64)
    assert np.array_equal(out["image"][..., 0], out["label"] * 40)
    small = RandomCrop(64)(sample(30, 40))  # crop clipped to the image
    assert small["label"].shape == (30, 40)
    single = {"image": np.zeros((100, 100, 3), np.uint8), "label": np.zeros((100, 100), np.uint8)}
    assert RandomCrop(50)(single)["label"].shape == (50, 50)  # impossible rule: still a crop


def test_pad_values():
    s = sample(20, 30)
    out = Pad((32, 40), pad_value=0, label_pad=255)(s)
    assert out["image"].shape == (32, 40, 3) and out["label"].shape == (32, 40)
    assert np.array_equal(out["image"][:20, :30], s["image"])
    assert np.array_equal(out["label"][:20, :30], s["label"])
    assert (out["image"][20:] == 0).all() and (out["image"][:, 30:] == 0).all()
    assert (out["label"][20:] == 255).all() and (out["label"][:, 30:] == 255).all()
    floats = Pad(32, pad_value=-1.5)(dict(s, image=s["image"].astype(np.float32)))
    assert floats["image"].dtype == np.float32 and (floats["image"][20:] == -1.5).all()
    big = sample(50, 60)
    assert Pad(32)(big)["label"].shape == (50, 60)


def test_flip_flips_image_and_label_together():
    s = sample(10, 16)
    s["image"][2, 0] = (255, 0, 0)
    s["label"][2, 0] = 7
    out = RandomFlip(1.0)(s)
    assert tuple(out["image"][2, 15]) == (255, 0, 0) and out["label"][2, 15] == 7
    assert np.array_equal(out["image"], s["image"][:, ::-1])
    assert np.array_equal(out["label"], s["label"][:, ::-1])
    assert RandomFlip(0.0)(s) is s
    rng = np.random.default_rng(0)
    flips = [RandomFlip(0.5)(s, rng=rng)["label"][2, 15] == 7 for _ in range(400)]
    assert 0.4 < np.mean(flips) < 0.6


def test_photometric_distortion_keeps_dtype_shape_and_label():
    s = sample(40, 50)
    label_before = s["label"].copy()
    step = PhotoMetricDistortion()
    changed = 0
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = step(s, rng=rng)
        assert out["image"].dtype == np.uint8 and out["image"].shape == (40, 50, 3)
        assert out["label"] is s["label"]
        changed += not np.array_equal(out["image"], s["image"])
    assert np.array_equal(s["label"], label_before) and changed >= 15
    a = PhotoMetricDistortion(rng=np.random.default_rng(5))(s)["image"]
    b = PhotoMetricDistortion(rng=np.random.default_rng(5))(s)["image"]
    assert np.array_equal(a, b)
    # brightness only: every pixel moves by the same clipped, truncated delta
    only = PhotoMetricDistortion(contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0)
    flat = {"image": np.full((4, 4, 3), 100, np.uint8), "label": np.zeros((4, 4), np.uint8)}
    values = {int(np.unique(only(flat, rng=rng)["image"])[0]) for _ in range(50)}
    assert 100 in values and min(values) >= 68 and max(values) <= 132 and len(values) > 5


def test_normalize_and_to_tensor():
    s = sample(6, 7)
    out = ToTensor()(Normalize(MEAN, STD)(s))
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 6, 7)
    assert out["label"].dtype == torch.int64 and out["label"].shape == (6, 7)
    expect = (s["image"][2, 3].astype(np.float32) - np.array(MEAN)) / np.array(STD)
    assert np.allclose(out["image"][:, 2, 3].numpy(), expect, atol=1e-5)
    raw = eval_pipeline()(s)
    assert raw["image"].dtype == torch.uint8
    assert torch.equal(raw["image"], torch.from_numpy(s["image"]).permute(2, 0, 1))
    assert raw["label"].dtype == torch.int64 and raw["label"].tolist() == s["label"].tolist()
    assert eval_pipeline(MEAN, STD)(s)["image"].dtype == torch.float32


def _run(pipeline, n=4):
    return [pipeline(sample(90, 120, seed=i)) for i in range(n)]


def test_train_pipeline_shapes_and_reproducibility():
    make = lambda seed: train_pipeline(64, MEAN, STD, scale=(256, 64), rng=np.random.default_rng(seed))
    a, b, c = _run(make(3)), _run(make(3)), _run(make(4))
    for x in a:
        assert x["image"].shape == (3, 64, 64) and x["image"].dtype == torch.float32
        assert x["label"].shape == (64, 64) and x["label"].dtype == torch.int64
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b))
    assert all(torch.equal(x["label"], y["label"]) for x, y in zip(a, b))
    assert not all(torch.equal(x["image"], y["image"]) for x, y in zip(a, c))
    p = make(0)
    p.reseed(3)
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(_run(p), a))
    from_int_seed = _run(train_pipeline(64, MEAN, STD, (256, 64), rng=3))
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(from_int_seed, a))


COLOURS = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30], [30, 230, 230],
                    [128, 128, 128], [0, 0, 0]], np.float32)  # classes 0..4, ignore, padding
DECODE = np.array([0, 1, 2, 3, 4, 255, 255])


def _coded_sample(h=96, w=128):
    label = np.zeros((h, w), np.uint8)
    for k, x0 in enumerate(range(0, w, 24)):  # vertical stripes, class depends on the column
        label[:, x0:x0 + 24] = k % 5
    label[60:80, 10:100] = 3
    label[5:15, 70:90] = 5  # -> ignore (255) region, grey
    image = COLOURS[label].astype(np.uint8)
    label[label == 5] = 255
    return {"image": image, "label": label, "name": "coded"}


def test_image_and_label_stay_aligned_through_the_pipeline():
    pipeline = train_pipeline(64, (0, 0, 0), (1, 1, 1), scale=(256, 64), photometric=False, rng=7)
    for _ in range(30):
        out = pipeline(_coded_sample())
        image = out["image"].permute(1, 2, 0).numpy()
        label = out["label"].numpy()
        nearest = np.argmin(((image[:, :, None, :] - COLOURS[None, None]) ** 2).sum(-1), axis=-1)
        decoded = DECODE[nearest]
        # interior pixels (label uniform in a 3x3 window) must decode exactly; edges may blend
        padded = np.pad(label, 1, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
        interior = (windows == label[:, :, None, None]).all(axis=(-1, -2))
        assert np.array_equal(decoded[interior], label[interior])
        assert (decoded == label).mean() > 0.9


class _Repeat(torch.utils.data.Dataset):
    def __init__(self):
        self.transform = train_pipeline(32, MEAN, STD, scale=(128, 32), rng=0)

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.transform(sample(40, 60))["image"]


def test_seed_worker_gives_reproducible_distinct_worker_streams():
    def load():
        loader = torch.utils.data.DataLoader(_Repeat(), batch_size=1, num_workers=2,
                                             worker_init_fn=seed_worker,
                                             generator=torch.Generator().manual_seed(0))
        return [x[0] for x in loader]

    first, second = load(), load()
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert not torch.equal(first[0], first[1])  # items 0 and 1 come from different workers


def test_compose_passes_its_rng_and_plain_callables():
    seen = []
    pipeline = Compose([lambda s: (seen.append(1), s)[1], RandomFlip(1.0)], rng=np.random.default_rng(0))
    out = pipeline(sample(4, 4))
    assert seen == [1] and out["image"].shape == (4, 4, 3)
