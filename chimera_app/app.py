"""``chimera-app``: the annotation window.

    chimera-app                   # a welcome page: open a folder, the demo, or a recent project
    chimera-app [IMAGES_DIR] [--model M] [--classes "a,b;c"] [--project-dir DIR]
    chimera-app --demo            # a shapes-world folder, opened with the bundled shapes-chimera model
    chimera-app --demo --screenshot out/demo.png   # render the window after the first pre-label, exit

Runs offline: the demo uses the bundled models in ``resources/models`` (a tiny random-weight model
where those are not installed, said so in the status bar).
"""

from __future__ import annotations

import argparse
import os
import shutil
from importlib import resources
import sys
from pathlib import Path

from chimera_engine.class_names import split_class_list
from chimera_engine.errors import ModelNameError

RESOURCES = Path(str(resources.files("chimera_resources")))  # the installed package data
DEMO_IMAGES = RESOURCES / "demo"
FALLBACK_MODEL = "clip:chimera-tiny/random"  # when the bundled shapes models are not installed
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def demo_model() -> str:
    from chimera_engine.clip_loading import bundled_model_path  # here: it imports torch, which --help must not wait for

    try:
        bundled_model_path("shapes-chimera")
    except ModelNameError:
        return FALLBACK_MODEL
    return "shapes-chimera"


def demo_classes(folder: Path | None = None) -> list[str]:
    """The demo's classes; none for a demo ``folder`` that already has a project (its classes
    may have been renamed, reordered or deleted since: never add them back)."""
    if folder is not None and (folder / ".chimera" / "project.json").exists():
        return []
    return [line.strip() for line in (DEMO_IMAGES / "classes.txt").read_text().splitlines() if line.strip()]


def default_demo_dir() -> Path:
    import platformdirs

    return platformdirs.user_data_path("chimera") / "demo"


def create_demo_folder(target: Path) -> Path:
    """Copy the bundled demo images into ``target`` (kept if it already holds them: work is never
    overwritten)."""
    target.mkdir(parents=True, exist_ok=True)
    for image in sorted(DEMO_IMAGES.glob("*.png")):
        if not (target / image.name).exists():
            shutil.copy2(image, target / image.name)
    return target


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chimera-app", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("images", nargs="?", type=Path, help="folder of images (searched recursively)")
    p.add_argument("--model", help="shapes-chimera, shapes-clip, clip:<arch>/<tag|file>[+naclip|sclip|clearclip|"
                                   "maskclip], or a checkpoint (default: the project's last model, else "
                                   "clip:ViT-B-16/openai when its weights are cached)")
    p.add_argument("--classes", help='classes to add, comma-separated; phrases of one class with ";"')
    p.add_argument("--project-dir", type=Path, help="keep the project here instead of IMAGES_DIR/.chimera "
                                                    "(for read-only image folders)")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="pixels the model is less sure of stay unlabeled (0: every pixel gets its best class)")
    p.add_argument("--device", default="auto", help="auto (CUDA → MPS → CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--demo", action="store_true", help="create a shapes-world folder and open it")
    p.add_argument("--screenshot", type=Path, help="save a screenshot after the first prediction and exit")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds --screenshot waits for a prediction")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.screenshot and "QT_QPA_PLATFORM" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # a screenshot needs no screen
    classes = split_class_list(args.classes) if args.classes else []
    model = args.model
    images = args.images
    if args.demo:
        images = create_demo_folder(images or default_demo_dir())
        model = model or demo_model()
        classes = classes or demo_classes(images)
    if images is not None and not images.is_dir():
        print(f"chimera-app: {images} is not a folder", file=sys.stderr)
        return EXIT_USAGE

    from PySide6.QtWidgets import QApplication

    from chimera_app.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Chimera")
    window = MainWindow(device=args.device)
    window.min_confidence.setValue(args.min_confidence)
    window.resize(1400, 900)
    window.show()
    if images is not None and not window.open_project(images, args.project_dir, model=model, classes=classes):
        return EXIT_FAILED
    if args.demo and model == FALLBACK_MODEL:
        window.statusBar().showMessage("The bundled shapes models are not installed: a tiny RANDOM model is "
                                       "predicting (`chimera-train bundle` builds them, see README)", 0)
    if args.screenshot:
        return window.screenshot_when_predicted(args.screenshot, args.timeout)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
