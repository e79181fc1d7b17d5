"""A torch-free start: ``calibench --help``, ``status``, ``init`` and reading the settings import
no torch, and the public face ``calibench`` loads its names on first use (PEP 562)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import calibench
from calibench.spec import RunSpec, Training
from calibench.store.index import Store

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from calibench.cli import main
try:
    code = main({argv!r})
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "torch": "torch" in sys.modules}}))
"""


def cli_in_fresh_python(argv: list[str], cwd: Path) -> tuple[dict, str]:
    """Run ``calibench <argv>`` in a new interpreter; returns its exit code, whether torch was
    imported, and everything it printed before."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    *printed, last = done.stdout.strip().splitlines()
    return json.loads(last), "\n".join(printed) + done.stderr


def test_help_imports_no_torch(tmp_path):
    result, printed = cli_in_fresh_python(["--help"], tmp_path)
    assert result == {"code": 0, "torch": False}
    assert "calibench" in printed and "status" in printed


def test_status_of_a_store_imports_no_torch(tmp_path):
    spec = RunSpec("ce", "digits", "small_cnn", 0, Training(epochs=1), device="cpu")
    store = Store(tmp_path / "out")
    claim = store.claim(spec)
    store.fail(claim, "boom", 1)
    result, printed = cli_in_fresh_python(["status", "--output", str(tmp_path / "out")], tmp_path)
    assert result == {"code": 0, "torch": False}
    assert "failed" in printed and "boom" in printed


def test_init_imports_no_torch(tmp_path):
    result, printed = cli_in_fresh_python(["init"], tmp_path)
    assert result == {"code": 0, "torch": False}
    assert (tmp_path / "benchmark.toml").is_file() and "wrote" in printed


def test_reading_the_settings_imports_no_torch(tmp_path):
    code = (
        "import sys\n"
        "from calibench.config import find_config, load_config\n"
        "config = load_config(find_config())\n"
        "assert 'presets' in config\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_public_face_loads_every_name_lazily():
    code = (
        "import sys, calibench\n"
        "before = 'torch' in sys.modules\n"
        "calibench.Method\n"
        "print(before, 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_public_face_exports_the_plugin_api():
    from calibench.data import register_dataset
    from calibench.evaluation.calibrators import Calibrator, register_calibrator
    from calibench.method import Method, TrainingSetup, register_method
    from calibench.models import register_backbone

    assert sorted(calibench.__all__) == sorted(calibench.PUBLIC)
    assert calibench.register_dataset is register_dataset
    assert calibench.register_backbone is register_backbone
    assert calibench.Calibrator is Calibrator
    assert calibench.register_calibrator is register_calibrator
    assert calibench.Method is Method and calibench.register_method is register_method
    assert calibench.TrainingSetup is TrainingSetup
    for name in calibench.__all__:
        assert getattr(calibench, name) is not None and name in dir(calibench)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        calibench.nope  # noqa: B018


def test_shift_names_are_checked_when_given(capsys):
    from calibench.cli import main
    from calibench.shift import SHIFTS

    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--shift", "nope"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err
    assert all(repr(name) in err for name in SHIFTS)
