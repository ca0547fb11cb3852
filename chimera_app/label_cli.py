"""``chimera-label``: pre-label a folder of images from typed class names, headless, into COCO JSON.

    chimera-label IMAGES_DIR --classes "road,car;automobile,tree" --model MODEL --out coco.json
    chimera-label --project IMAGES_DIR [--classes ...] [--out coco.json]

Classes are separated by commas; phrases of one class by semicolons (averaged as prompts). With
``torchrun --nproc_per_node N chimera-label ...`` the images are split across processes (one GPU
each where there are GPUs) and rank 0 writes one merged file.

With ``--project`` the predictions go into the folder's Chimera project (the one the app opens):
its classes (plus any given with --classes) are predicted for every image a person has not
verified, pixels a person painted are kept, and each image is saved as soon as it is done, so an
interrupted run loses nothing and ``--skip-predicted`` resumes it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

from chimera_app.batch_label import Failure, LabelOptions, label_images, relative_name
from chimera_app.project import ImageState, Project
from chimera_app.project.exports import export_coco, export_png_masks
from chimera_app.project.mask_paths import check_png_collisions
from chimera_app.service.downloads import fetch_clip_weights
from chimera_app.service.prelabel import Prelabeler, store_prediction
from chimera_app.service.versions import record_in_use
from chimera_engine import ChimeraError, ClassNameError, find_images
from chimera_engine.background import background_prompts
from chimera_engine.class_names import parse_classes, split_class_list, split_phrases
from chimera_engine.formats.coco import CocoBuilder, validate_coco, write_coco
from chimera_engine.formats.png_masks import write_class_list
from chimera_engine.interrupts import interrupted, watching
from chimera_engine.model_names import parse_model_name

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chimera-label", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="models: shapes-chimera, shapes-clip (bundled), clip:<arch>/<tag|random|file>[+method] "
               "(e.g. clip:ViT-B-16/openai, NACLIP; +sclip, +clearclip, +maskclip), "
               "chimera:<preset>/<arch>/<tag>, or a checkpoint path.\n"
               "Exit status: 0 when the output was written (skipped images are listed on stderr), "
               "1 when nothing could be written, 2 for bad arguments.")
    p.add_argument("images_dir", nargs="?", type=Path, help="folder of images (searched recursively)")
    p.add_argument("--classes", help='class names: "road,car;automobile,tree"')
    p.add_argument("--classes-file", type=Path, help="a file with one class per line (instead of --classes)")
    p.add_argument("--background", default=None,
                   help='phrases that compete with the classes but leave pixels unlabeled: "sky,wall", '
                        '"stuff" for the 26 stuff words of the training-free papers, or "none"; '
                        'default: the model\'s own (the shapes models: "background"; others: none)')
    p.add_argument("--model", default="shapes-chimera", help="model name or checkpoint (default: %(default)s)")
    p.add_argument("--out", type=Path, help="COCO JSON file to write (with --project: an export of the project)")
    p.add_argument("--project", type=Path, metavar="IMAGES_DIR",
                   help="pre-label into this folder's Chimera project instead (human-verified images are skipped)")
    p.add_argument("--project-data", type=Path, metavar="DIR",
                   help="with --project: keep the project here instead of IMAGES_DIR/.chimera (read-only images)")
    p.add_argument("--skip-predicted", action="store_true",
                   help="with --project: also skip images already predicted or in progress (resume an interrupted run)")
    p.add_argument("--png-dir", type=Path, help="also write one indexed PNG mask per image and classes.json here")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default: %(default)s)")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="pixels whose best class probability is below this stay unlabeled; "
                        "0 gives every pixel its best class (default: %(default)s)")
    p.add_argument("--min-area", type=float, default=0.0,
                   help="a class that wins less than this share of an image's labelled pixels is dropped and "
                        "its pixels go to their next best class (default: %(default)s, off)")
    p.add_argument("--refine", type=int, default=None, metavar="STEPS",
                   help="PAMR refinement steps on the image's colours (10 is the papers'; 0 = off; "
                        "default: the model's own, 10 for the shapes models, else off)")
    p.add_argument("--short-side", type=int, default=None,
                   help="resize images to this short side before the windows (default: the model's)")
    p.add_argument("--window", type=int, default=None, help="sliding-window size (default: the model's)")
    p.add_argument("--stride", type=int, default=None, help="sliding-window stride (default: the model's)")
    p.add_argument("--download", metavar="MODEL",
                   help="only fetch the weights of a clip: model into the Hugging Face cache, then exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def read_classes(args: argparse.Namespace) -> list[str]:
    if args.classes_file:
        try:
            lines = args.classes_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise ClassNameError(f"the classes file {args.classes_file} is not UTF-8 text ({exc.reason} "
                                 f"at byte {exc.start})") from None
        except OSError as exc:
            raise ChimeraError(f"cannot read the classes file: {exc}") from exc
        classes = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    else:
        classes = split_class_list(args.classes or "")
    parse_classes(classes + list(_background(args, classes) or ()))  # fail before loading any model
    return classes


def segmenter_options(args: argparse.Namespace) -> dict:
    """The engine options the flags set (defaults of every segment() call of the run)."""
    inference = {k: v for k, v in (("short_side", args.short_side), ("window", args.window),
                                   ("stride", args.stride)) if v is not None}
    return {"batch_size": args.batch_size, "refine": args.refine, "min_area": args.min_area,
            **({"inference": inference} if inference else {})}


def download(model: str) -> int:
    if parse_model_name(model).kind != "clip":
        print("chimera-label: --download takes a clip:<arch>/<tag> model", file=sys.stderr)
        return EXIT_USAGE
    from chimera_engine.clip_loading import hf_cache_dir

    path = fetch_clip_weights(model)
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
    from chimera_engine import distributed, load_segmenter  # here: they import torch; --help and bad arguments don't wait

    context = distributed.start(args.device)
    try:
        segmenter = load_segmenter(args.model, device=context.device, precision=args.precision,
                                   **segmenter_options(args))
        options = LabelOptions(tuple(classes), _background(args, classes),
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
    for failure in sorted(failures, key=lambda f: f.file_name):
        print(f"skipped {failure.file_name}: {failure.reason}", file=sys.stderr)
    if not results:
        print("chimera-label: no image could be labelled; nothing written", file=sys.stderr)
        return EXIT_FAILED
    problems = validate_coco(coco, expected_classes=names)
    if problems:  # a bug of ours, never the user's: refuse to write a file that breaks COCO tools
        raise AssertionError("the COCO output failed validation: " + "; ".join(problems[:5]))
    # The COCO file first: a --png-dir on a full disk must not cost the file that had room.
    try:
        write_coco(args.out, coco)
    except OSError as exc:
        print(f"chimera-label: cannot write {args.out}: {exc.strerror or exc}; nothing written", file=sys.stderr)
        return EXIT_FAILED
    if args.png_dir:
        missing = [r for r in results if r.png_error]
        try:
            write_class_list(args.png_dir, names)
        except OSError as exc:
            missing.append(f"classes.json ({exc.strerror or exc})")
        if missing:
            shown = ", ".join(r if isinstance(r, str) else f"{r.file_name} ({r.png_error})" for r in missing[:5])
            print(f"chimera-label: wrote {args.out}, but {len(missing)} files could not be written into "
                  f"{args.png_dir}: {shown}", file=sys.stderr)
            return EXIT_FAILED
    print(f"wrote {args.out}: {len(coco['images'])} images, {len(coco['annotations'])} annotations, "
          f"{len(failures)} skipped, {seconds:.1f} s"
          + (f"; masks in {args.png_dir}" if args.png_dir else ""), file=sys.stderr)
    return EXIT_OK


def run_project(args: argparse.Namespace) -> int:
    """Pre-label the images of a project that no person has verified; save each one as it is done."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ChimeraError("--project runs in one process (a project has one writer); run it without torchrun")
    given = read_classes(args) if (args.classes or args.classes_file) else []
    with Project.open(args.project, args.project_data) as project:
        # A class the project already has (by name) is kept as it is; the new ones are tried on a
        # copy first, so a clash (or a background phrase that is also a class) changes nothing.
        new = [text for text in given if project.classes.find(split_phrases(text)[0]) is None]
        trial = project.classes.copy()
        for text in new:
            trial.add(text)
        if not len(trial):
            raise ChimeraError("the project has no classes yet: give them with --classes")
        background = _background(args, trial.prompts())
        parse_classes(trial.prompts() + list(background or ()))  # fail before loading any model
        for text in new:
            project.classes.add(text)
        images = project.images()
        if not images:
            raise ChimeraError(f"no images found in {project.root}")
        # Resuming (--skip-predicted) also leaves images a person has started on (predicted before).
        skip = {ImageState.VERIFIED} | ({ImageState.PREDICTED, ImageState.IN_PROGRESS} if args.skip_predicted
                                        else set())
        todo = [rel for rel in images if project.state(rel) not in skip]
        project.save_meta()
        saved: list[str] = []
        failures: list[Failure] = []
        start = time.perf_counter()
        try:
            if todo:
                from chimera_engine import load_segmenter

                segmenter = load_segmenter(args.model, device=args.device, precision=args.precision,
                                           **segmenter_options(args))
                # The app offers the model that made the predictions: a version of this project
                # becomes its active version, any other model its own model choice.
                if record_in_use(project.data_dir, args.model) is None:
                    project.model = args.model
                print(f"chimera-label: {len(todo)} of {len(images)} images to label into {project.data_dir}, "
                      f"{len(project.classes)} classes, {segmenter.describe()}", file=sys.stderr)
                _label_into(project, segmenter, todo, background, args, saved, failures)
        except (KeyboardInterrupt, ChimeraError, OSError) as exc:
            if not isinstance(exc, KeyboardInterrupt) and not interrupted():
                raise
            print(f"chimera-label: interrupted; {len(saved)} images were saved in the project, run again with "
                  "--skip-predicted to go on", file=sys.stderr)
            return EXIT_INTERRUPTED
        for failure in failures:
            print(f"skipped {failure.file_name}: {failure.reason}", file=sys.stderr)
        print(f"chimera-label: labelled {len(saved)} images, {len(images) - len(todo)} left as they were "
              f"({'human-verified, in progress or predicted' if args.skip_predicted else 'human-verified'}), "
              f"{len(failures)} failed, {time.perf_counter() - start:.1f} s", file=sys.stderr)
        if todo and not saved:
            return EXIT_FAILED
        for kind, target, export in (("COCO", args.out, export_coco), ("PNG masks", args.png_dir, export_png_masks)):
            if target is not None:
                record = export(project, target)
                print(f"wrote {kind} {target}: {record['images']} images, {record['annotations']} annotations",
                      file=sys.stderr)
    return EXIT_OK


def _background(args, classes) -> tuple[str, ...] | None:
    """``--background`` as prompts; None (not given) = the model's own default background."""
    return None if args.background is None else tuple(background_prompts(args.background, classes))


def _label_into(project: Project, segmenter, todo: list[str], background: tuple[str, ...] | None,
                args: argparse.Namespace, saved: list[str], failures: list[Failure]) -> None:
    """Segment ``todo`` with the project's classes; write each prediction into its document (pixels
    a person decided stay) and save it at once, appending it to ``saved``."""
    run = Prelabeler([(rel, project.image_path(rel)) for rel in todo], project.classes.prompts(),
                     project.classes.ids(), background=background, min_confidence=args.min_confidence,
                     images_per_step=segmenter.batch_size, decode_workers=2, decode_ahead=2 * segmenter.batch_size + 2)
    from chimera_engine import distributed

    with distributed.progress(len(todo), enabled=not args.quiet) as bar:
        for result in run.results(segmenter):
            bar.update(1)
            if not result.ok:
                failures.append(Failure(result.key, result.error))
                continue
            try:
                stored = store_prediction(project, result.key, result.labels, result.confidence)
            except (ChimeraError, OSError) as exc:  # e.g. damaged saved labels: reported, left alone
                if interrupted():  # not the image's fault: Ctrl+C stopped the code that saved it
                    raise KeyboardInterrupt from exc
                failures.append(Failure(result.key, str(exc)))
            else:
                if stored:
                    saved.append(result.key)


def main(argv: list[str] | None = None) -> int:
    with watching():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.download:
            return download(args.download)
        if args.project is not None:
            if args.images_dir is not None:
                parser.error("give the folder either as IMAGES_DIR or as --project, not both")
        elif args.images_dir is None or args.out is None or not (args.classes or args.classes_file):
            parser.error("IMAGES_DIR, --classes (or --classes-file) and --out are required")
        if args.batch_size < 1 or not 0 <= args.min_confidence <= 1 or not 0 <= args.min_area < 1:
            parser.error("--batch-size must be ≥ 1, --min-confidence in [0, 1] and --min-area in [0, 1)")
        if (args.refine is not None and args.refine < 0) or any(v is not None and v < 16 for v in (args.short_side, args.window, args.stride)):
            parser.error("--refine must be ≥ 0 and --short-side / --window / --stride at least 16 pixels")
        if args.window is not None and args.stride is not None and args.stride > args.window:
            parser.error("--stride must not exceed --window (pixels would be skipped)")
        if args.device != "auto":
            from chimera_engine.devices import resolve_device  # imports torch: only when a device is named

            try:
                resolve_device(args.device)
            except (RuntimeError, ValueError) as exc:  # e.g. cuda on a machine without a GPU
                print(f"chimera-label: {exc}", file=sys.stderr)
                return EXIT_USAGE
        return run_project(args) if args.project is not None else run(args)
    except ClassNameError as exc:  # a bad class list is a bad argument, found before any work
        print(f"chimera-label: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ChimeraError as exc:
        if interrupted():  # Ctrl+C inside library code can come back as "damaged model" (chimera_engine.interrupts)
            return _interrupted_before_writing()
        print(f"chimera-label: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return _interrupted_before_writing()


def _interrupted_before_writing() -> int:
    print("chimera-label: interrupted; nothing written", file=sys.stderr)
    return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
