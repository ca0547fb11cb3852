"""``chimera-label``: pre-label a folder of images from typed class names, headless, into COCO JSON.

    chimera-label IMAGES_DIR --classes "road,car;automobile,tree" --model MODEL --out coco.json

Classes are separated by commas; phrases of one class by semicolons (averaged as prompts). With
``torchrun --nproc_per_node N chimera-label ...`` the images are split across processes (one GPU
each where there are GPUs) and rank 0 writes one merged file.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path


from engine import distributed
from chimera_app.batch_label import LabelOptions, check_png_collisions, label_images, relative_name
from engine.formats.coco import CocoBuilder, validate_coco, write_coco
from engine.formats.png_masks import write_class_list
from engine import ChimeraError, find_images, load_segmenter
from engine.clip_loading import ClipSpec, fetch_weights, hf_cache_dir
from engine.text import parse_classes

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def split_class_list(text: str) -> list[str]:
    """``"road, car;automobile , tree"`` → ``["road", "car;automobile", "tree"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chimera-label", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="models: shapes-chimera, shapes-clip (bundled), clip:<arch>/<tag|random|file> "
               "(e.g. clip:ViT-B-16/openai), chimera:<preset>/<arch>/<tag>, or a checkpoint path.\n"
               "Exit status: 0 when the output was written (skipped images are listed on stderr), "
               "1 when nothing could be written, 2 for bad arguments.")
    p.add_argument("images_dir", nargs="?", type=Path, help="folder of images (searched recursively)")
    p.add_argument("--classes", help='class names: "road,car;automobile,tree"')
    p.add_argument("--classes-file", type=Path, help="a file with one class per line (instead of --classes)")
    p.add_argument("--background", default="",
                   help='phrases that compete with the classes but leave pixels unlabeled: "sky,wall"')
    p.add_argument("--model", default="shapes-chimera", help="model name or checkpoint (default: %(default)s)")
    p.add_argument("--out", type=Path, help="COCO JSON file to write")
    p.add_argument("--png-dir", type=Path, help="also write one indexed PNG mask per image and classes.json here")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default: %(default)s)")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="pixels whose best class probability is below this stay unlabeled; "
                        "0 gives every pixel its best class (default: %(default)s)")
    p.add_argument("--download", metavar="MODEL",
                   help="only fetch the weights of a clip: model into the Hugging Face cache, then exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def read_classes(args: argparse.Namespace) -> list[str]:
    if args.classes_file:
        try:
            lines = args.classes_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ChimeraError(f"cannot read the classes file: {exc}") from exc
        classes = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    else:
        classes = split_class_list(args.classes or "")
    parse_classes(classes + split_class_list(args.background))  # fail before loading any model
    return classes


def download(model: str) -> int:
    if not model.startswith("clip:"):
        print("chimera-label: --download takes a clip:<arch>/<tag> model", file=sys.stderr)
        return EXIT_USAGE
    path = fetch_weights(ClipSpec.parse(model[5:]))
    print(f"{model}: weights at {path} (cache: {hf_cache_dir()})")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    classes = read_classes(args)
    root = args.images_dir.resolve()
    paths = find_images(root)
    if not paths:
        raise ChimeraError(f"no images found in {root}")
    if args.png_dir:
        check_png_collisions([relative_name(p, root) for p in paths])
    context = distributed.start(args.device)
    try:
        segmenter = load_segmenter(args.model, device=context.device, precision=args.precision,
                                   batch_size=args.batch_size)
        options = LabelOptions(tuple(classes), tuple(split_class_list(args.background)),
                               args.min_confidence, args.png_dir)
        mine = paths[context.rank::context.world_size]
        if context.is_main:
            print(f"chimera-label: {len(paths)} images, {len(classes)} classes, {segmenter.describe()}"
                  + (f", {context.world_size} processes" if context.world_size > 1 else ""), file=sys.stderr)
        start = time.perf_counter()
        with distributed.progress(len(mine), enabled=context.is_main and not args.quiet) as bar:
            results, failures = label_images(segmenter, mine, root, options, bar.update)
        results, failures = context.gather(results), context.gather(failures)
        if not context.is_main:
            return EXIT_OK
        return write_outputs(args, classes, segmenter.name, results, failures, time.perf_counter() - start)
    finally:
        context.close()


def write_outputs(args, classes, model_name, results, failures, seconds) -> int:
    info = {"description": "Chimera pre-labels", "model": model_name, "prompts": classes,
            "min_confidence": args.min_confidence,
            "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    names = [phrases[0] for phrases in parse_classes(classes)]  # "car;automobile" is named "car"
    builder = CocoBuilder(names, info=info)
    for item in sorted(results, key=lambda r: r.file_name):
        builder.add_encoded(item.file_name, item.width, item.height, item.masks)
    coco = builder.to_dict()
    if args.png_dir:
        write_class_list(args.png_dir, names)
    for failure in sorted(failures, key=lambda f: f.file_name):
        print(f"skipped {failure.file_name}: {failure.reason}", file=sys.stderr)
    if not results:
        print("chimera-label: no image could be labelled; nothing written", file=sys.stderr)
        return EXIT_FAILED
    problems = validate_coco(coco, expected_classes=names)
    if problems:  # a bug of ours, never the user's: refuse to write a file that breaks COCO tools
        raise AssertionError("the COCO output failed validation: " + "; ".join(problems[:5]))
    write_coco(args.out, coco)
    print(f"wrote {args.out}: {len(coco['images'])} images, {len(coco['annotations'])} annotations, "
          f"{len(failures)} skipped, {seconds:.1f} s"
          + (f"; masks in {args.png_dir}" if args.png_dir else ""), file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.download:
            return download(args.download)
        if args.images_dir is None or args.out is None or not (args.classes or args.classes_file):
            parser.error("IMAGES_DIR, --classes (or --classes-file) and --out are required")
        if args.batch_size < 1 or not 0 <= args.min_confidence <= 1:
            parser.error("--batch-size must be ≥ 1 and --min-confidence in [0, 1]")
        return run(args)
    except ChimeraError as exc:
        print(f"chimera-label: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("chimera-label: interrupted; nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
