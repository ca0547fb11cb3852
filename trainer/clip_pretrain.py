"""Pre-train a tiny CLIP on shapes-world image–caption pairs (``chimera-train shapes-clip``).

Real CLIP has seen everything; so must ours: the captions cover **all** shape classes, seen and unseen
alike. Only the segmentation training later hides the unseen classes' masks. Scenes are rendered once
into an in-memory bank (``SceneBank``) and re-captioned and flipped at random on every use.

With only a dozen shape words, a batch of 128 holds many captions that say the same thing ("a star.",
"a photo of a star."). Plain CLIP loss calls those other pairs negatives, which pays the model to tell
same-caption images apart by anything but shape. ``matched_positives`` makes a caption count as
matching every image of the batch it truly describes (``caption_matches``) and spreads the target over
them. Measured (seed 0, batch 128, this CPU): no gain in zero-shot accuracy at the same step (500:
14.3 % vs 11.3 % plain; 1,000: 36.3 % vs 36.3 %; 1,500: 40.0 % vs 44.3 %), so it is an option, off by
default, and the bundled CLIP is trained with the plain loss. A higher peak lr (1e-3) did not help
either (35.7 % after a 2,000-step schedule; 5e-4 reached 36 % after 1,000 steps of a 6,000-step one).

``low_res_steps``/``low_res_size``: the first steps see the bank's images shrunk (the positional
embedding interpolated to the smaller grid, as the engine's forward does for any size), the rest at
the native size; one cosine schedule spans both, or with ``native_lr`` the native-size steps get a
schedule of their own (a warm-up to ``native_lr`` x the peak rate, then their own cosine) after the
low-resolution cosine has run down, as CLIPA fine-tunes at full size. The resizing of CLIPA (Li, Wang
and Xie, "An Inverse Scaling Law for CLIP Training", 2023): fewer tokens per image make a step
cheaper (measured here at batch 128: 0.59 s at 64 px, 0.36 s at 48, 0.27 s at 40), and the
native-size steps at the end adapt the model to the size it is used at.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from safetensors.torch import save

from chimera_engine import distributed, vit_ops
from chimera_engine.atomic import atomic_write_bytes, atomic_write_json
from chimera_engine.clip_loading import ClipSpec, create_clip, register_bundled_configs
from chimera_engine.text import encode_text_trimmed
from chimera_engine.tiling import to_tensor
from chimera_trainer.config import ConfigError
from chimera_trainer.optim import adamw
from chimera_trainer.shapes import BACKGROUND, SHAPE_CLASSES, sample
from chimera_trainer.shapes.world import COLORS, describe, scene_objects, twin

ZERO_SHOT_SEED_OFFSET = 1_000_003  # held-out images come from a seed the training never uses


def _render_scene(index: int, seed: int, size: int, single_share: float, background_share: float,
                  twins: bool = False):
    # Half the pairs show one object, so words bind to single shapes, not only to scenes; a few show
    # none, captioned "a photo of a background." and the like: the word then means "no shape here".
    low, high = scene_objects(index, single_share, background_share)
    s = sample(seed, index, size, min_objects=low, max_objects=high)
    if not twins:
        return s.image, s.instances
    t = twin(seed, index, size, s, min_objects=low, max_objects=high)
    return s.image, s.instances, None if t is None else (t.image, t.instances)


class SceneBank:
    """``scenes`` shapes-world images of world ``seed``, rendered once (by ``workers`` processes)
    and kept as one uint8 array, so a training step costs model time only: rendering on the fly
    took ~40 % of each step on this 2-core CPU. ``batch`` draws scenes at random, flips half of
    them left-right (every shape stays its class) and captions each anew, so a scene seen twice is
    rarely seen the same way twice.

    ``twin_share`` > 0 (our option): each scene with a shape also has a *twin*, the same scene with
    one shape redrawn as another class (``render_sample(swap=...)``), and that share of each batch
    comes as scene–twin pairs, flipped alike and captioned alike but for the one shape word. In-batch
    negatives otherwise differ in colour, background and layout too, which tell most pairs apart;
    a twin differs only in an outline, so the pair is paid for shape alone."""

    def __init__(self, seed: int, size: int, scenes: int, tokenizer, context: int, mean, std,
                 single_share: float = 0.45, color_p: float = 0.3, workers: int = 2, background_share: float = 0.08,
                 twin_share: float = 0.0):
        self.seed, self.color_p, self.twin_share = seed, color_p, twin_share
        self.tokenizer, self.context, self.mean, self.std = tokenizer, context, mean, std
        job = partial(_render_scene, seed=seed, size=size, single_share=single_share,
                      background_share=background_share, twins=twin_share > 0)
        if workers > 1 and scenes >= 256:
            with multiprocessing.get_context().Pool(workers) as pool:
                rendered = pool.map(job, range(scenes), chunksize=256)
        else:
            rendered = [job(i) for i in range(scenes)]
        self.images = np.stack([r[0] for r in rendered])
        self.instances = [r[1] for r in rendered]
        self.twins = [r[2] for r in rendered] if twin_share > 0 else []
        self._tokens: dict[str, torch.Tensor] = {}

    def __len__(self):
        return len(self.instances)

    def tokens(self, caption: str) -> torch.Tensor:
        if caption not in self._tokens:  # few distinct captions: tokenising is cached
            self._tokens[caption] = self.tokenizer([caption], context_length=self.context)[0]
        return self._tokens[caption]

    def batch(self, step: int, size: int):
        """(normalised images B x 3 x H x W, caption tokens B x context, shown, said) for ``step``;
        ``shown``/``said``: the (shape, colour) counts of each image and of what its caption names."""
        rng = np.random.default_rng([self.seed, step, 2])
        index = rng.integers(len(self), size=size)
        pixels = self.images[index]
        flip = rng.random(size) < 0.5
        instances = [self.instances[i] for i in index]
        # Slot ``size - 1 - k`` holds the twin of slot k's scene (when it has one), and both captions
        # are drawn from generators of the same seed: the same template, order and colour words.
        captioners = [rng] * size
        for k in range(min(int(round(self.twin_share * size / 2)), size // 2)):
            twin = self.twins[index[k]]
            if twin is not None:
                t = size - 1 - k
                pixels[t], instances[t], flip[t] = twin[0], twin[1], flip[k]
                captioners[k], captioners[t] = (np.random.default_rng([self.seed, step, 3, k]) for _ in range(2))
        pixels[flip] = pixels[flip, :, ::-1]
        images = to_tensor(pixels, self.mean, self.std)
        tokens, shown, said = [], [], []
        for captioner, scene in zip(captioners, instances):
            # Colour is named in only ``color_p`` of the mentions: captions that name colours too
            # often let colour alone match most pairs in a batch, and the tiny ViT never learns shape.
            caption, says = describe(captioner, scene, self.color_p)
            tokens.append(self.tokens(caption))
            shown.append(_pair_counts(scene))
            said.append(_pair_counts([p for p in says if p[1] is not None]))
        return images, torch.stack(tokens), torch.stack(shown), torch.stack(said)


_COLOR_NAMES = list(COLORS)


def _pair_counts(pairs) -> torch.Tensor:
    """(shape, colour) pairs → a classes x colours count matrix."""
    counts = torch.zeros(len(SHAPE_CLASSES), len(_COLOR_NAMES), dtype=torch.int16)
    for name, color in pairs:
        counts[SHAPE_CLASSES.index(name), _COLOR_NAMES.index(color)] += 1
    return counts


def caption_matches(shown: torch.Tensor, said: torch.Tensor) -> torch.Tensor:
    """B x B bool: caption j describes image i. ``shown[i]``: the image's (shape, colour) counts;
    ``said[j]``: the colours caption j names. Captions name every shape, so j matches i when the
    shape counts are equal and every colour j names is there on that shape in i."""
    shapes = shown.sum(-1)
    same_shapes = (shapes[:, None] == shapes[None, :]).all(-1)
    colors_true = (said[None, :] <= shown[:, None]).flatten(2).all(-1)
    return same_shapes & colors_true


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                     matches: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric CLIP loss; with ``matches`` (B x B, image i — caption j, diagonal true) the target
    of each row / column is spread evenly over its matches instead of the diagonal alone."""
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = logit_scale.exp().clamp(max=100) * image @ text.t()
    if matches is None:
        matches = torch.eye(len(image), dtype=torch.bool, device=image.device)
    m = matches.float()
    return (F.cross_entropy(logits, m / m.sum(1, keepdim=True))
            + F.cross_entropy(logits.t(), (m / m.sum(0, keepdim=True)).t())) / 2


@torch.no_grad()
def zero_shot_accuracy(model, size: int, seed: int, images: int = 600, classes=SHAPE_CLASSES) -> dict:
    """Classify held-out single-shape images by "a photo of a {class}." prompts."""
    from chimera_engine.clip_loading import clip_preprocess
    from chimera_engine.text import TextEncoder

    model.eval()
    mean, std = clip_preprocess(model)
    text = TextEncoder(model, "single").encode(list(classes))
    correct = np.zeros(len(classes))
    total = np.zeros(len(classes))
    for start in range(0, images, 100):
        batch = [sample(seed + ZERO_SHOT_SEED_OFFSET, i, size, max_objects=1) for i in range(start, start + 100)]
        x = torch.stack([to_tensor(s.image, mean, std) for s in batch])
        pred = (F.normalize(model.encode_image(x), dim=-1) @ text.t()).argmax(1).numpy()
        for s, p in zip(batch, pred):
            truth = classes.index(s.instances[0][0])
            total[truth] += 1
            correct[truth] += p == truth
    # "background" as a 13th prompt: shape-less scenes should pick it, single-shape scenes should not.
    with_bg = torch.cat([text, TextEncoder(model, "single").encode([BACKGROUND])])
    empty = [sample(seed + ZERO_SHOT_SEED_OFFSET, images + i, size, min_objects=0, max_objects=0) for i in range(100)]
    shapes = [sample(seed + ZERO_SHOT_SEED_OFFSET, i, size, max_objects=1) for i in range(100)]
    picks = [(F.normalize(model.encode_image(torch.stack([to_tensor(s.image, mean, std) for s in batch])), dim=-1)
              @ with_bg.t()).argmax(1) for batch in (empty, shapes)]
    return {"accuracy": float(correct.sum() / total.sum()),
            "per_class": {c: float(correct[i] / max(total[i], 1)) for i, c in enumerate(classes)},
            "images": int(total.sum()),
            "background_recognised": float((picks[0] == len(classes)).float().mean()),
            "shapes_called_background": float((picks[1] == len(classes)).float().mean())}


def encode_pairs(model, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image embeddings, caption embeddings) through the engine's block forward: equal to
    ``model.encode_image`` / ``model.encode_text`` (gradients too; tested) and a fifth cheaper per
    step here (``benchmarks/clip_pretrain_step.py``): no batch-second attention layout, and captions
    run only up to their longest's end-of-text token instead of the whole context."""
    return vit_ops.encode_image(vit_ops.check_dense_capable(model.visual), images), encode_text_trimmed(model, tokens)


def pretrain(out: str | Path, arch: str = "shapes-tiny", steps: int = 12000, batch_size: int = 128,
             lr: float = 5e-4, weight_decay: float = 0.1, warmup: int = 100, seed: int = 0, workers: int = 2,
             scenes: int = 50_000, color_p: float = 0.3, eval_every: int = 0, matched_positives: bool = False,
             init: str | Path | None = None, low_res_steps: int = 0, low_res_size: int = 0,
             native_lr: float = 0.0, twin_share: float = 0.0, log: Callable[[dict], None] = print) -> dict:
    """Train, save the open_clip state dict as ``out`` (.safetensors) and the zero-shot report beside
    it (``report_path``); return the report. ``scenes``: the size of the pre-rendered bank (at most
    ``steps * batch_size``; 50,000 64-px scenes take 0.6 GB). ``init``: start from these CLIP weights
    (a .safetensors state dict) instead of random ones, e.g. to teach a trained CLIP new captions.
    ``low_res_steps``: the first steps at ``low_res_size`` px; ``native_lr``: the peak rate of the
    native-size steps' own schedule, as a fraction of ``lr`` (0: one schedule for all steps; see the
    module's notes). ``twin_share``: the share of each batch that comes as scene–twin pairs
    (``SceneBank``; 0 = none, the bundled recipe)."""
    register_bundled_configs()
    torch.manual_seed(seed)
    model = create_clip(ClipSpec(arch, "random" if init is None else str(init))).train()
    size = model.visual.image_size[0]
    shrink = _low_res_check(low_res_steps, low_res_size, size, vit_ops.patch_size(model.visual))
    _native_lr_check(native_lr, shrink, low_res_steps, steps)
    if not 0.0 <= twin_share <= 1.0:
        raise ConfigError(f"the share of scene-twin pairs lies in 0..1, got {twin_share}")
    context = distributed.start("cpu")  # after the checks: a refused setting leaves no group open
    part = _batch_part(batch_size, context)
    started = time.perf_counter()
    bank = SceneBank(seed, size, min(scenes, steps * batch_size), open_clip.get_tokenizer(arch),
                     model.context_length, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD,
                     color_p=color_p, workers=workers if context.world_size == 1 else 1, twin_share=twin_share)
    log = log if context.is_main else (lambda record: None)
    render_seconds = round(time.perf_counter() - started, 1)
    log({"scenes": len(bank), "render_s": render_seconds, "processes": context.world_size})
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = adamw([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr)

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(schedule, steps=steps, warmup=warmup, restart=low_res_steps if native_lr else 0,
                           restart_peak=native_lr))

    # Drawing the batch (~35 ms on one thread) stays in the loop: drawn ahead on a second thread it made
    # steps no faster at 40 px and 15 % slower at 64 px, its torch ops contending with the training's
    # two OpenMP threads (benchmarks/results/clip_pretrain_prefetch.json).
    started, evaluating = time.perf_counter(), 0.0
    for step in range(1, steps + 1):
        images, tokens, shown, said = bank.batch(step, batch_size)  # the whole batch, the same on every rank
        if step <= low_res_steps and shrink:
            images = F.interpolate(images, size=(low_res_size, low_res_size), mode="bilinear", antialias=True,
                                   align_corners=False)
        image_emb, text_emb = _gathered(*encode_pairs(model, images[part], tokens[part]), context)
        loss = contrastive_loss(image_emb, text_emb, model.logit_scale,
                                caption_matches(shown, said) if matched_positives else None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _average_gradients(model, context)
        optimizer.step()
        scheduler.step()
        if step % 50 == 0 or step == steps:
            log({"step": step, "loss": round(float(loss.detach()), 4), "lr": scheduler.get_last_lr()[0],
                 "images_per_s": round(step * batch_size / (time.perf_counter() - started - evaluating), 1)})
        if eval_every and step % eval_every == 0 and step < steps and context.is_main:
            tick = time.perf_counter()
            log({"step": step, "zero_shot_accuracy": zero_shot_accuracy(model, size, seed, images=300)["accuracy"]})
            model.train()
            evaluating += time.perf_counter() - tick
    report = None
    if context.is_main:
        report = zero_shot_accuracy(model, size, seed)
        report.update({"steps": steps, "batch_size": batch_size, "lr": lr, "processes": context.world_size,
                       "scenes": len(bank), "render_seconds": render_seconds,
                       "low_res_steps": low_res_steps if shrink else 0, "low_res_size": low_res_size if shrink else size,
                       "native_lr": native_lr, "twin_share": twin_share,
                       "seconds": round(time.perf_counter() - started, 1),
                       "init": None if init is None else Path(init).name})
        atomic_write_bytes(out, save({k: v.contiguous() for k, v in model.state_dict().items()}))
        atomic_write_json(report_path(out), report)
    report = context.broadcast(report)
    context.close()
    return report


def schedule(step: int, steps: int, warmup: int, restart: int = 0, restart_peak: float = 0.0) -> float:
    """The rate of step ``step + 1`` (LambdaLR counts from 0) as a fraction of the peak: a linear
    warm-up, then a cosine to 0 at ``steps``; with ``restart``, the first ``restart`` steps' cosine
    ends at step ``restart`` and the rest warm up to ``restart_peak`` (over the same ``warmup`` steps)
    and decay again."""
    peak, length = 1.0, steps
    if restart:
        if step < restart:
            length = restart
        else:
            step, length, peak = step - restart, steps - restart, restart_peak
    return peak * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step / length, 1.0)))


def _native_lr_check(native_lr: float, shrink: bool, low_res_steps: int, steps: int) -> None:
    if not native_lr:
        return
    if not 0 < native_lr <= 1:
        raise ConfigError(f"the native-size steps' peak rate is a fraction of the peak lr in (0, 1], got {native_lr}")
    if not shrink:
        raise ConfigError("a native-size schedule of its own needs a low-resolution phase first "
                          "(--low-res-steps N and a --low-res-size below the native size)")
    if low_res_steps >= steps:
        raise ConfigError("a native-size schedule of its own needs native-size steps after the low-resolution "
                          "ones (--low-res-steps below --steps)")


def _low_res_check(steps: int, low_size: int, size: int, patch: int) -> bool:
    """Whether the low-resolution phase runs; a clear error for sizes the model cannot take."""
    if steps < 0:
        raise ConfigError(f"low-resolution steps must be >= 0, got {steps}")
    if steps == 0 or low_size == size:
        return False
    if not patch <= low_size < size or low_size % patch:
        raise ConfigError(f"the low resolution must be a multiple of the patch size {patch} below {size} px, "
                         f"got {low_size}")
    return True


def _batch_part(batch_size: int, context: distributed.Context) -> slice:
    """This process's rows of every step's batch: ``torchrun`` splits the batch, never changes it."""
    if batch_size % context.world_size:
        raise ValueError(f"batch size {batch_size} is not divisible by {context.world_size} processes")
    rows = batch_size // context.world_size
    return slice(context.rank * rows, (context.rank + 1) * rows)


def _gathered(image: torch.Tensor, text: torch.Tensor, context: distributed.Context):
    """Every process's embeddings, in rank order (the whole batch's), keeping the gradient path to
    this process's own. Each process then computes the same whole-batch loss; autograd's all-gather
    sums the gradients of that loss from all processes into each one's rows (``world_size`` times the
    gradient), so averaging the parameter gradients over processes gives exactly one process's."""
    if context.world_size == 1:
        return image, text
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(image)), torch.cat(all_gather(text))


def _average_gradients(model: torch.nn.Module, context: distributed.Context) -> None:
    """Mean of every parameter's gradient over the processes, in one flat all-reduce."""
    if context.world_size == 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= context.world_size
    for g, value in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(value.view_as(g))


def report_path(weights: str | Path) -> Path:
    """Where the zero-shot report of a pre-trained CLIP is kept: beside its weights."""
    return Path(weights).with_suffix(".json")
