"""Losses (CE, Selective Global Distillation, Semantic Alignment), schedules and metrics."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chimera_trainer import losses
from chimera_trainer.metrics import ConfusionMatrix
from chimera_trainer.optim import lr_factor, parameter_groups


def _unit(*shape, dim=1, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=dim)


def test_keep_ratio_shrinks_linearly_and_by_cosine():
    assert losses.keep_ratio(0, 100) == pytest.approx(1.0)
    assert losses.keep_ratio(50, 100) == pytest.approx(0.55)
    assert losses.keep_ratio(100, 100) == pytest.approx(0.1)
    assert losses.keep_ratio(50, 100, schedule="cosine") == pytest.approx(0.55)
    assert losses.keep_ratio(25, 100, schedule="cosine") > losses.keep_ratio(25, 100)
    assert losses.keep_ratio(70, 100, 1.0, 1.0) == 1.0  # "SGD without shrinking"


def test_sgd_selects_the_most_similar_tokens():
    teacher = _unit(1, 8, dim=1)
    feats = _unit(1, 8, 2, 2, seed=1)
    feats[0, :, 0, 0] = teacher[0]  # one token equals the teacher
    total, count = losses.selective_global_distillation(feats, teacher, ratio=0.25)  # keeps 1 of 4
    assert count == 1 and total.item() == pytest.approx(0.0, abs=1e-6)
    total_all, _ = losses.selective_global_distillation(feats, teacher, ratio=1.0)
    sims = torch.einsum("bchw,bc->bhw", feats, teacher)
    assert total_all.item() == pytest.approx((1 - sims).mean().item(), rel=1e-5)
    g = torch.Generator().manual_seed(0)
    random_losses = [losses.selective_global_distillation(feats, teacher, 0.25, selection="random",
                                                          generator=g)[0].item() for _ in range(20)]
    assert np.mean(random_losses) > 0.1  # random tokens are mostly not the matching one


def test_sgd_gradient_flows_only_through_selected_tokens():
    teacher = _unit(1, 8)
    feats = _unit(1, 8, 2, 2, seed=2).requires_grad_()
    total, _ = losses.selective_global_distillation(feats, teacher, ratio=0.5)
    total.backward()
    touched = (feats.grad.abs().sum(1) > 0).sum().item()
    assert touched == 2


def test_sgd_centered_measures_errors_around_the_batch_mean_teacher():
    teacher = _unit(4, 8)
    exact = teacher[:, :, None, None].expand(4, 8, 2, 2).contiguous()
    zero, count = losses.selective_global_distillation(exact, teacher, 1.0, loss="centered")
    assert count == 4 and zero.item() == pytest.approx(0.0, abs=1e-5)
    feats = _unit(4, 8, 2, 2, seed=3)
    total, _ = losses.selective_global_distillation(feats, teacher, 1.0, loss="centered")
    mean = teacher.mean(0)
    tokens = F.normalize(feats.flatten(2).transpose(1, 2) - mean, dim=-1)
    target = F.normalize(teacher - mean, dim=-1)
    assert total.item() == pytest.approx((1 - torch.einsum("bnc,bc->bn", tokens, target)).mean(1).sum().item(),
                                         rel=1e-5)
    # Teachers that share most of their direction: an error along what tells them apart costs
    # little as a plain cosine and much around the mean.
    shared = torch.zeros(8)
    shared[0] = 1.0
    close = F.normalize(shared + 0.1 * _unit(4, 8, seed=4), dim=-1)
    drifted = F.normalize(close.roll(1, 0) * 0.5 + close * 0.5, dim=-1)[:, :, None, None]
    plain, _ = losses.selective_global_distillation(drifted, close, 1.0)
    centered, _ = losses.selective_global_distillation(drifted, close, 1.0, loss="centered")
    assert centered.item() > 20 * plain.item()
    one, _ = losses.selective_global_distillation(feats[:1], teacher[:1], 1.0, loss="centered")
    assert one.item() == pytest.approx(1.0)


def test_sgd_infonce_prefers_matching_teachers():
    teacher = _unit(4, 8)
    good = teacher[:, :, None, None].expand(4, 8, 2, 2).contiguous()
    bad = teacher.roll(1, 0)[:, :, None, None].expand(4, 8, 2, 2).contiguous()
    low, _ = losses.selective_global_distillation(good, teacher, 1.0, loss="infonce")
    high, _ = losses.selective_global_distillation(bad, teacher, 1.0, loss="infonce")
    assert low < high


def test_twin_contrast_is_a_two_way_choice_of_the_pooled_features():
    teacher, twin = _unit(3, 8), _unit(3, 8, seed=5)
    feats = _unit(3, 8, 2, 2, seed=6)
    total, count = losses.twin_contrast(feats, teacher, twin, tau=0.1)
    pooled = F.normalize(feats.mean((2, 3)), dim=-1)
    own, other = (pooled * teacher).sum(-1) / 0.1, (pooled * twin).sum(-1) / 0.1
    assert count == 3
    assert total.item() == pytest.approx((-own + torch.logaddexp(own, other)).sum().item(), rel=1e-5)
    near = teacher[:, :, None, None].expand(3, 8, 2, 2)
    far = twin[:, :, None, None].expand(3, 8, 2, 2)
    assert losses.twin_contrast(near, teacher, twin)[0] < losses.twin_contrast(far, teacher, twin)[0]


def test_twin_contrast_with_several_twins_is_a_choice_among_all_of_them():
    teacher, feats = _unit(3, 8), _unit(3, 8, 2, 2, seed=6)
    twins = torch.stack([_unit(3, 8, seed=5 + k) for k in range(4)], 1)  # B x K x C, K = 4
    total, count = losses.twin_contrast(feats, teacher, twins, tau=0.1)
    pooled = F.normalize(feats.mean((2, 3)), dim=-1)
    own = (pooled * teacher).sum(-1) / 0.1
    others = torch.stack([(pooled * twins[:, k]).sum(-1) / 0.1 for k in range(4)], 1)
    assert count == 3
    assert total.item() == pytest.approx((-own + torch.logsumexp(torch.cat([own[:, None], others], 1), 1)).sum().item(),
                                         rel=1e-5)
    # One twin given as B x 1 x C is the two-way form, to the bit.
    assert torch.equal(losses.twin_contrast(feats, teacher, twins[:, :1])[0],
                       losses.twin_contrast(feats, teacher, twins[:, 0])[0])


def test_twin_contrast_over_a_region_pools_its_tokens_and_an_empty_one_pools_all():
    teacher, twin = _unit(2, 8), _unit(2, 8, seed=5)
    feats = _unit(2, 8, 3, 3, seed=6)
    region = torch.zeros(2, 3, 3)
    region[0, 0, 1], region[0, 2, 2] = 1.0, 0.25  # image 0: two cells, one a quarter changed; image 1: none
    total, count = losses.twin_contrast(feats, teacher, twin, tau=0.1, region=region)
    pooled = torch.stack([(feats[0, :, 0, 1] + 0.25 * feats[0, :, 2, 2]) / 1.25, feats[1].mean((1, 2))])
    pooled = F.normalize(pooled, dim=-1)
    own, other = (pooled * teacher).sum(-1) / 0.1, (pooled * twin).sum(-1) / 0.1
    assert count == 2
    assert total.item() == pytest.approx((-own + torch.logaddexp(own, other)).sum().item(), rel=1e-5)
    # Only the region's tokens get a gradient where it is not empty.
    feats.requires_grad_(True)
    losses.twin_contrast(feats, teacher, twin, tau=0.1, region=region)[0].backward()
    moved = feats.grad.abs().sum(1) > 0
    assert moved[0].tolist() == [[False, True, False], [False, False, False], [False, False, True]]
    assert moved[1].all()


def test_changed_region_is_the_share_of_each_cell_where_image_and_twin_differ():
    images = torch.rand(2, 3, 8, 8)
    twins = images.clone()
    twins[0, 1, 0:2, 0:4] += 0.5  # image 0: the top-left cell (4 x 4) is half changed, in one channel
    twins[1, :, 7, 7] = -1.0      # image 1: one pixel of the bottom-right cell
    region = losses.changed_region(images, twins, (2, 2))
    assert region.shape == (2, 2, 2)
    assert region[0].tolist() == [[0.5, 0.0], [0.0, 0.0]]
    assert region[1].tolist() == [[0.0, 0.0], [0.0, 1 / 16]]


def test_semantic_alignment_counts_regions_and_rewards_alignment():
    text = _unit(3, 8)
    labels = torch.full((1, 8, 8), 255)
    labels[0, :4] = 0
    labels[0, 4:, :4] = 2
    aligned = torch.zeros(1, 8, 4, 4)
    aligned[0, :, :2] = text[0][:, None, None]
    aligned[0, :, 2:] = text[2][:, None, None]
    good, regions = losses.semantic_alignment(aligned, labels, text, tau=0.07)
    swapped, _ = losses.semantic_alignment(aligned, labels.where(labels == 255, 2 - labels), text, tau=0.07)
    assert regions == 2 and good < swapped
    none, zero = losses.semantic_alignment(aligned, torch.full((1, 8, 8), 255), text)
    assert zero == 0 and none.item() == 0


def test_seen_ce_ignores_255():
    logits = torch.randn(1, 3, 4, 4)
    labels = torch.full((1, 8, 8), 255)
    labels[0, 0, 0] = 1
    total, count = losses.seen_cross_entropy(logits, labels)
    assert count == 1
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    assert total.item() == pytest.approx(F.cross_entropy(up[:, :, 0, 0], torch.tensor([1])).item(), rel=1e-5)


def test_confusion_matrix_metrics_by_hand():
    cm = ConfusionMatrix(3)
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, -1, 0, 0]])
    cm.update(pred, target)
    iou = cm.iou()
    assert iou[0] == pytest.approx(1 / 2)  # tp 1, gt 2, pred 1
    assert iou[1] == pytest.approx(2 / 3)  # tp 2, gt 2, pred 3
    assert iou[2] == pytest.approx(1 / 2)  # tp 1, gt 2 (one unlabeled), pred 1
    s = cm.summary(["a", "b", "c"], unseen=["c"])
    assert s["mIoU_seen"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert s["mIoU_unseen"] == pytest.approx(0.5)
    h = 2 * s["mIoU_seen"] * 0.5 / (s["mIoU_seen"] + 0.5)
    assert s["hIoU"] == pytest.approx(h)
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError):
        cm.update(np.zeros((2, 2)), np.full((2, 2), 7))


def test_lr_schedule_and_parameter_groups():
    assert lr_factor(0, 100, 10) == pytest.approx(1e-6, abs=1e-6)
    assert lr_factor(10, 100, 10) == pytest.approx(0.9)
    assert lr_factor(100, 100, 10) == 0
    assert lr_factor(5, 100, 10) < lr_factor(10, 100, 10)
    model = torch.nn.Module()
    model.body = torch.nn.Module()
    model.body.backbone = torch.nn.Conv2d(3, 4, 3)
    model.head = torch.nn.Linear(4, 4)
    groups = {g["name"]: g for g in parameter_groups(model, 1e-4, 10, 0.01)}
    assert groups["backbone"]["lr"] == 1e-4 and groups["head"]["lr"] == pytest.approx(1e-3)
    assert groups["head-no-decay"]["weight_decay"] == 0 and not math.isnan(groups["backbone"]["weight_decay"])


def test_class_weighted_cross_entropy_is_the_weighted_mean_over_labelled_pixels():
    import torch
    import torch.nn.functional as F

    from chimera_trainer.losses import seen_cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 0, :] = 255
    weight = torch.tensor([0.1, 1.0, 2.0])
    loss, count = seen_cross_entropy(logits, labels, weight)
    per_pixel = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    valid = labels != 255
    w = weight[labels.clamp(max=2)] * valid
    assert torch.allclose(loss / count, (per_pixel * w).sum() / w.sum())
    plain_loss, plain_count = seen_cross_entropy(logits, labels)
    assert plain_count == valid.sum() and torch.allclose(plain_loss / plain_count, per_pixel[valid].mean())
