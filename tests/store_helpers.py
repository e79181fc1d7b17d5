"""Helpers of the store, runner and executor tests (docs/reliability.md): run specs, strict JSON,
the one-line error of a failed command, the index rows read without locks, progress displays
that record or interrupt, a plugin method that waits at a gate, and a simulated unusable disk.

Tests run as root, which file permissions do not stop, so an unwritable folder is simulated in
the test process by :class:`StorageFault`: it makes writes under one folder raise the OSError a
read-only or full disk raises, and opens SQLite databases there read-only.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from calibench.config import DEFAULT_CONFIG, Overrides, build_run_specs, load_config
from calibench.spec import RunSpec

REPO = Path(__file__).resolve().parent.parent

GATED = '''
import os
import time
import torch.nn.functional as F
from calibench import Loss, Method, register_method

@register_method("gated")
class Gated(Method):
    """Cross-entropy that, after `steps` training steps, waits until the file `gate` exists:
    a run that is surely still training when a test acts on it."""
    steps: int = 0
    gate: str = ""

    def loss(self, model, x, y):
        self.calls = getattr(self, "calls", 0) + 1
        while self.calls > self.steps and not os.path.exists(self.gate):
            time.sleep(0.05)
        ce = F.cross_entropy(model(x), y)
        return Loss(ce, {"ce": ce})
'''

PLUGIN = '''
import os
import torch.nn.functional as F
from calibench import Loss, Method, register_method

@register_method("per_sample_loss")
class PerSampleLoss(Method):
    """Returns one loss per sample instead of their mean."""
    def loss(self, model, x, y):
        return Loss(F.cross_entropy(model(x), y, reduction="none"))

@register_method("bare_tensor")
class BareTensor(Method):
    """Returns a tensor, not a Loss."""
    def loss(self, model, x, y):
        return F.cross_entropy(model(x), y)

@register_method("kills_its_process")
class KillsItsProcess(Method):
    """Ends its process at once, as the kernel's out-of-memory killer would."""
    def loss(self, model, x, y):
        os._exit(9)

@register_method("reads_a_missing_file")
class ReadsAMissingFile(Method):
    """Reads a side file that is not there: an OSError of the method, not of the store."""
    def loss(self, model, x, y):
        open("/nonexistent/calibench-side-file.txt").read()

@register_method("loses_its_socket")
class LosesItsSocket(Method):
    """Meets a network error, another OSError of the method's own."""
    def loss(self, model, x, y):
        raise ConnectionResetError(104, "Connection reset by peer")
'''
PLUGIN_METHODS = (
    "per_sample_loss",
    "bare_tensor",
    "kills_its_process",
    "reads_a_missing_file",
    "loses_its_socket",
)
EXPECTED_FAILURES = {
    "per_sample_loss": "epoch 1: method per_sample_loss: Loss.total must be a scalar tensor, "
    "got (64,)",
    "bare_tensor": "epoch 1: method bare_tensor: loss() returned Tensor, not calibench.Loss",
}


def specs_of(methods: list[str], epochs: int) -> list[RunSpec]:
    """The run specs `calibench run --methods ... --epochs ... --device cpu` trains."""
    overrides = Overrides(methods=methods, epochs=epochs, device="cpu")
    return build_run_specs(load_config(DEFAULT_CONFIG), overrides)


def strict_json(path: Path) -> object:
    """Parse a JSON file, rejecting the NaN/Infinity tokens strict parsers reject."""

    def reject(token: str) -> None:
        raise AssertionError(f"{path} holds the non-JSON token {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def one_error_line(err: str) -> str:
    """The single error message of a failed command (no traceback, nothing else)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("calibench: error: "), err
    return lines[0]


def cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "calibench.cli", *args]


def rows(db: Path) -> dict[str, dict]:
    """The index rows by method, read without taking any lock a writer needs."""
    return {r["method"]: r for r in all_rows(db.parent)}


def all_rows(out: Path) -> list[dict]:
    """The index rows of the results folder ``out``, by seed."""
    db = out / "calibench.db"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY seed")]
        except sqlite3.OperationalError:
            return []


def log_lines(run_dir: Path) -> list[str]:
    return (run_dir / "log.csv").read_text().splitlines()


def flip_byte(path: Path, where: float = 0.5) -> None:
    """Invert one byte of ``path`` (at the fraction ``where`` of its length): a bit flip."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in "ZX"
    except OSError:
        return True


class Recorder:
    """A progress display that records what the runner tells it."""

    def __init__(self, stop_at_start: bool = False) -> None:
        self.started: list[int] = []
        self.warnings: list[str] = []
        self.stop_at_start = stop_at_start

    def start(self, spec, first_epoch):
        self.started.append(first_epoch)
        if self.stop_at_start:
            raise KeyboardInterrupt

    def warn(self, message):
        self.warnings.append(message)

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class StopAfter(Recorder):
    """Interrupts the run after a given epoch, as Ctrl-C would."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.stop_epoch = epoch

    def epoch(self, row):
        if row["epoch"] == self.stop_epoch:
            raise KeyboardInterrupt


def _target(path, dir_fd: int | None = None) -> str | None:
    """The absolute path an os call on ``path`` (relative to the folder ``dir_fd``) reaches."""
    if isinstance(path, int):
        return None
    path = os.fsdecode(path)
    if dir_fd is not None and not os.path.isabs(path):
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    return os.path.abspath(path)


class StorageFault:
    """While ``active``, writing under ``root`` fails with ``code``: EACCES (a read-only
    folder: creating, replacing or removing files, and SQLite opens its databases read-only)
    or ENOSPC (a full disk: the final rename of every atomic write fails)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path, code: int) -> None:
        self.root = str(root.resolve())
        self.code = code
        self.active = False
        real_open, real_os_open = builtins.open, os.open
        real_connect, real_rename, real_link = sqlite3.connect, os.rename, os.link

        def hit(path, dir_fd=None) -> bool:
            target = _target(path, dir_fd)
            return self.active and target is not None and target.startswith(self.root)

        def fail(path) -> None:
            raise OSError(self.code, os.strerror(self.code), os.fsdecode(path))

        def wrap(real):
            def fake(path, *args, dir_fd=None, **kwargs):
                if hit(path, dir_fd):
                    fail(path)
                if dir_fd is not None:
                    kwargs["dir_fd"] = dir_fd
                return real(path, *args, **kwargs)

            return fake

        def fake_open(file, mode="r", *args, **kwargs):
            if self.code == errno.EACCES and hit(file) and set(mode) & set("wax+"):
                fail(file)
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, dir_fd=None, **kwargs):
            writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if self.code == errno.EACCES and hit(path, dir_fd) and writes:
                fail(path)
            return real_os_open(path, flags, *args, dir_fd=dir_fd, **kwargs)

        def fake_replace(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
            if hit(dst, dst_dir_fd):
                fail(dst)
            return real_rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

        def fake_link(src, dst, *, src_dir_fd=None, dst_dir_fd=None, **kwargs):
            if self.code == errno.EACCES and hit(dst, dst_dir_fd):
                fail(dst)
            return real_link(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, **kwargs)

        def fake_connect(database, *args, **kwargs):
            if self.code == errno.EACCES and hit(database):
                return real_connect(f"file:{database}?mode=ro", *args, uri=True, **kwargs)
            return real_connect(database, *args, **kwargs)

        monkeypatch.setattr(os, "replace", fake_replace)
        monkeypatch.setattr(sqlite3, "connect", fake_connect)
        if code == errno.EACCES:
            monkeypatch.setattr(builtins, "open", fake_open)
            monkeypatch.setattr(io, "open", fake_open)
            monkeypatch.setattr(os, "open", fake_os_open)
            monkeypatch.setattr(os, "link", fake_link)
            for name in ("mkdir", "unlink", "remove", "rmdir"):
                monkeypatch.setattr(os, name, wrap(getattr(os, name)))
