"""A wheel works on its own: built, installed into a fresh virtual environment (reusing the
already installed dependencies, no network) and used from a folder outside the repository."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
NOT_SOURCES = (".git", ".venv", "results", "build", "dist", "*.egg-info", "__pycache__", ".*cache")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(root / "dist"), "-q"],
        check=True,
        cwd=root,
        env=CLEAN_ENV,
    )  # fmt: skip
    (wheel,) = (root / "dist").glob("calibench-*.whl")
    env = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, env=CLEAN_ENV)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        env=CLEAN_ENV,
    ).stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (Path(purelib) / "outer_dependencies.pth").write_text("\n".join(sorted(outer)) + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)],
        check=True,
        env=CLEAN_ENV,
    )
    return env


def _run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        cwd=cwd,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_wheel_ships_methods_and_defaults(venv: Path, tmp_path: Path) -> None:
    code = (
        "import json, calibench; m = calibench.get_method('focal'); "
        "print(json.dumps([calibench.__file__, calibench.list_methods(), m.gamma]))"
    )
    out = _run(venv, tmp_path, "python", "-c", code)
    assert out.returncode == 0, out.stderr
    location, methods, gamma = json.loads(out.stdout)
    assert str(REPO) not in location and "site-packages" in location
    assert {"ce", "focal", "rankmixup_mrl", "rankmixup_mndcg"} <= set(methods)
    assert gamma == 3.0
    listed = _run(venv, tmp_path, "calibench", "list", "methods")
    assert listed.returncode == 0, listed.stderr
    assert "rankmixup_mndcg" in listed.stdout
    presets = _run(venv, tmp_path, "calibench", "list", "presets")
    assert "site-packages" in presets.stdout and "quick" in presets.stdout


def test_wheel_trains_digits_from_another_folder(venv: Path, tmp_path: Path) -> None:
    run = _run(
        venv, tmp_path, "calibench", "run", "--methods", "ce", "--epochs", "1", "--output", "out"
    )
    assert run.returncode == 0, run.stderr
    (metrics,) = (tmp_path / "out" / "runs").glob("digits/small_cnn/ce/*/metrics.json")
    assert 0.0 < json.loads(metrics.read_text())["acc"] <= 1.0
    init = _run(venv, tmp_path, "calibench", "init")
    assert init.returncode == 0 and (tmp_path / "benchmark.toml").is_file()
    presets = _run(venv, tmp_path, "calibench", "list", "presets")
    assert str(tmp_path / "benchmark.toml") in presets.stdout.replace("\n", "")
