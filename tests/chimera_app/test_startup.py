"""Start-up cost: --help, argument errors and the project store never wait for torch or Qt."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "open_clip", "PySide6")


@pytest.mark.parametrize("module", ["chimera_app.app", "chimera_app.label_cli"])
def test_help_answers_without_importing_torch_or_qt(module):
    code = (f"import sys\nfrom {module} import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print('heavy:', ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert "usage:" in out.stdout and out.stdout.strip().splitlines()[-1] == "heavy:"


def test_the_project_store_and_the_service_records_import_without_torch():
    code = ("import sys, chimera_app.project, chimera_app.service.requests, chimera_app.project.mask_paths\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == ""
