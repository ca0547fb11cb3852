"""``chimera-train``'s OpenMP threads spin (training owns the cores); a policy already set wins."""

import os
import subprocess
import sys

PROBE = "import {first}, {second}, torch, os; print(os.environ['OMP_WAIT_POLICY'])"


def _policy(first: str, second: str, preset: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset is not None:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", PROBE.format(first=first, second=second)], env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_trainer_cli_loads_torch_with_spinning_threads():
    assert _policy("chimera_trainer.cli", "chimera_engine") == "ACTIVE"


def test_a_policy_already_set_wins_the_apps_passive_reaches_its_fine_tune():
    # The app's fine-tune child inherits the app's environment, where chimera_engine set PASSIVE.
    assert _policy("chimera_trainer.cli", "chimera_engine", preset="PASSIVE") == "PASSIVE"


def test_an_inference_process_that_loads_the_engine_first_keeps_passive():
    assert _policy("chimera_engine", "chimera_trainer") == "PASSIVE"
