"""How calibench writes and reads the files of a results folder.

Every file is written atomically (a temporary name in the same folder, fsync, rename), so an
interruption never leaves a half-written file, and every JSON strictly (no NaN or Infinity
tokens, which strict parsers reject). :class:`RunDir` is the one place the names of a run
folder's files are spelled; it records the sha256 of each file it writes in the folder's
``checksums.json`` and checks it when the file is read back, because ``torch.load`` does not
check its archive's CRCs and a flipped bit would load silently. Folders written before checksums
existed have no entries: their files load unverified. A failed write is a :class:`StorageError`
naming the file (the results folder is unusable; no run is at fault).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import secrets
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError


class StorageError(CalibenchError):
    """Writing the results folder failed (read-only, full, removed): the command stops, since no
    run is at fault and every other run would meet the same folder."""


class DamagedFile(CalibenchError):
    """A stored file whose content no longer matches the sha256 recorded when it was written."""


def storage_error(path: Path, exc: OSError) -> StorageError:
    """The one message of a failed write of ``path``: what failed, and what to check."""
    return StorageError(
        f"cannot write {path}: {exc.strerror or exc}. Check that {path.parent} is a writable "
        "folder with free space (or give another --output)."
    )


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None, so that the JSON is strict (no
    ``NaN``/``Infinity`` tokens, which strict parsers reject)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def non_finite_keys(metrics: dict[str, Any]) -> list[str]:
    """The keys of ``metrics`` whose value is a non-finite float."""
    return sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))


def json_bytes(obj: Any) -> bytes:
    """``obj`` as strict, indented JSON with sorted keys."""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    return text.encode()


def arrays_bytes(**arrays: Any) -> bytes:
    """Arrays as the bytes of an ``.npz`` archive (``numpy.savez``)."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def torch_bytes(obj: Any) -> bytes:
    """``obj`` as the bytes ``torch.save`` writes."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    """The hex SHA-256 digest of ``data`` (FIPS 180-4)."""
    return hashlib.sha256(data).hexdigest()


def write_bytes_at(folder: Path, name: str, data: bytes, dir_fd: int | None = None) -> None:
    """Write ``data`` as ``folder/name`` atomically. With ``dir_fd`` (a handle on the folder) the
    write lands in that very folder even if it was renamed meanwhile, and no folder is created;
    without it the folder and its parents are created as needed. Raises OSError."""
    opened = None  # the handle this call opens (and closes), if any
    if dir_fd is None:
        folder.mkdir(parents=True, exist_ok=True)
        dir_fd = opened = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    tmp = f".{name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    finally:
        if opened is not None:
            os.close(opened)


def _write_file(path: Path, data: bytes) -> None:
    try:
        write_bytes_at(path.parent, path.name, data)
    except OSError as exc:
        raise storage_error(path, exc) from None


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as strict, indented JSON, atomically."""
    _write_file(Path(path), json_bytes(obj))


def write_text(path: Path, text: str) -> None:
    """Write ``text``, atomically."""
    _write_file(Path(path), text.encode())


def save_arrays(path: Path, **arrays: Any) -> None:
    """Save arrays to an ``.npz`` file, atomically."""
    _write_file(Path(path), arrays_bytes(**arrays))


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` atomically."""
    _write_file(Path(path), torch_bytes(obj))


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or damaged."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def remove_tree(path: Path) -> None:
    """Remove a folder and what it holds, or the link or file at ``path``: a symbolic link is
    removed itself, never followed."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


class RunDir:
    """A run folder: the names of its files (the only place they are spelled), atomic writes
    that record each file's sha256, and reads that check it.

    A claimed run's folder is opened with a handle (``dir_fd``) and a ``fence``, a check that
    this process still holds the run's lease (it raises when not): every write calls the fence
    first and lands in the folder the handle names, so a process that lost its lease can never
    write into a folder another process has taken over."""

    CONFIG = "config.json"
    STATE = "state.json"
    SPLIT = "split.npz"
    LOG = "log.csv"
    LAST = "last.pt"
    PREVIOUS = "last.prev.pt"
    BEST = "best.pt"
    LOGITS = "logits.npz"
    METRICS = "metrics.json"
    ERROR = "error.txt"
    CHECKSUMS = "checksums.json"
    SHIFT_PREFIX = "shift-"
    SHIFT_SUFFIX = ".npz"
    CHECKPOINTS = (LAST, PREVIOUS)
    """The newest resume checkpoint and the one before it, in the order a resume tries them."""
    RESULT_ARRAYS = ("val_logits", "val_labels", "test_logits", "test_labels")
    """The arrays every complete run's ``logits.npz`` holds."""
    UNCHECKED = (STATE, CHECKSUMS)
    """Files without a recorded checksum: the run's state changes hands between processes."""

    def __init__(
        self,
        path: Path | str,
        fence: Callable[[], None] | None = None,
        dir_fd: int | None = None,
    ) -> None:
        self.path = Path(path)
        self._fence = fence
        self._fd = dir_fd

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).__init__(self, state["path"])

    def close(self) -> None:
        """Release the folder handle (later writes go by path)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @classmethod
    def shift_name(cls, set_name: str) -> str:
        """The file that holds the logits of the shifted test set ``set_name``."""
        return f"{cls.SHIFT_PREFIX}{set_name}{cls.SHIFT_SUFFIX}"

    def shift_files(self) -> dict[str, Path]:
        """Every stored shifted set of the run: set name -> file."""
        prefix, suffix = self.SHIFT_PREFIX, self.SHIFT_SUFFIX
        found = sorted(self.path.glob(f"{prefix}*{suffix}"))
        return {p.name[len(prefix) : -len(suffix)]: p for p in found}

    def exists(self, name: str) -> bool:
        """Whether the folder (the one the handle names, when there is one) holds ``name``."""
        try:
            if self._fd is None:
                (self.path / name).stat()
            else:
                os.stat(name, dir_fd=self._fd)
        except FileNotFoundError:
            return False
        return True

    # Writing --------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise unless this process may write the folder (its fence passes)."""
        if self._fence is not None:
            self._fence()

    def write_json(self, name: str, obj: Any) -> None:
        """Write ``obj`` as strict JSON to ``name``."""
        self.write_bytes(name, json_bytes(obj))

    def write_text(self, name: str, text: str) -> None:
        """Write ``text`` (UTF-8) to ``name``."""
        self.write_bytes(name, text.encode())

    def save_arrays(self, name: str, **arrays: Any) -> None:
        """Save arrays as the ``.npz`` archive ``name``."""
        self.write_bytes(name, arrays_bytes(**arrays))

    def save_torch(self, name: str, obj: Any) -> None:
        """``torch.save`` ``obj`` as ``name``."""
        self.write_bytes(name, torch_bytes(obj))

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write ``name`` atomically after the fence, then record its sha256."""
        self.check()
        with self._storage(name):
            write_bytes_at(self.path, name, data, self._fd)
            if name not in self.UNCHECKED:
                self._record({name: sha256(data)})

    def rotate(self, name: str, to: str) -> None:
        """Rename ``name`` to ``to`` (replacing it), its recorded checksum going along."""
        self.check()
        with self._storage(to):
            self._record({to: self.checksums().get(name)})
            if self._fd is None:
                os.replace(self.path / name, self.path / to)
            else:
                os.replace(name, to, src_dir_fd=self._fd, dst_dir_fd=self._fd)

    def adopt(self, source: Path, names: Iterable[str]) -> list[str]:
        """Bring the files ``names`` of the folder ``source`` into this one (hard links; copies
        where the file system has none) with their checksums; returns those brought. Links are
        safe: every write replaces a file, none changes one in place."""
        sums = RunDir(source).checksums()
        brought = []
        for name in names:
            if (source / name).is_symlink() or not (source / name).is_file():
                continue
            with self._storage(name):
                try:
                    if self._fd is None:
                        os.link(source / name, self.path / name)
                    else:
                        os.link(source / name, name, dst_dir_fd=self._fd)
                except OSError:
                    write_bytes_at(self.path, name, (source / name).read_bytes(), self._fd)
            brought.append(name)
        with self._storage(self.CHECKSUMS):
            self._record({n: sums.get(n) for n in brought})
        return brought

    @contextmanager
    def _storage(self, name: str) -> Iterator[None]:
        """An OSError inside is the lease's verdict when the fence no longer passes (the folder
        was taken over and moved away), and a :class:`StorageError` naming ``name`` otherwise."""
        try:
            yield
        except OSError as exc:
            self.check()
            raise storage_error(self.path / name, exc) from None

    def _record(self, entries: dict[str, str | None]) -> None:
        sums = self.checksums()
        for name, digest in entries.items():
            if digest is None:
                sums.pop(name, None)
            else:
                sums[name] = digest
        write_bytes_at(self.path, self.CHECKSUMS, json_bytes({"sha256": sums}), self._fd)

    # Reading --------------------------------------------------------------------------------

    def read_bytes(self, name: str) -> bytes:
        """The bytes of ``name`` (from the folder handle when there is one); raises OSError."""
        if self._fd is None:
            return (self.path / name).read_bytes()
        fd = os.open(name, os.O_RDONLY, dir_fd=self._fd)
        with os.fdopen(fd, "rb") as fh:
            return fh.read()

    def checksums(self) -> dict[str, str]:
        """The recorded sha256 of each file ({} for a folder written without checksums)."""
        try:
            found = json.loads(self.read_bytes(self.CHECKSUMS)).get("sha256", {})
        except (OSError, ValueError, AttributeError):
            return {}
        return found if isinstance(found, dict) else {}

    def checksum_problem(self, name: str, data: bytes | None = None) -> str | None:
        """Why ``name`` does not match its recorded sha256 (None when it does, or when none is
        recorded); ``data`` are its bytes when already read. Raises OSError when unreadable."""
        expected = self.checksums().get(name)
        if expected is None:
            return None
        data = self.read_bytes(name) if data is None else data
        if sha256(data) == expected:
            return None
        return f"{name} is damaged: it does not match the sha256 recorded when it was written"

    def read_checked(self, name: str) -> bytes:
        """The bytes of ``name`` after checking them against the recorded sha256; raises
        :class:`DamagedFile` when they differ and OSError when the file cannot be read."""
        data = self.read_bytes(name)
        problem = self.checksum_problem(name, data)
        if problem:
            raise DamagedFile(f"{problem} ({self.path})")
        return data

    def load_torch(self, name: str) -> Any:
        """``torch.load`` of a checked ``name`` (``weights_only``, onto the CPU)."""
        import torch

        data = self.read_checked(name)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

    def load_arrays(self, name: str) -> dict[str, Any]:
        """The arrays of the checked ``.npz`` archive ``name``."""
        import numpy as np

        with np.load(io.BytesIO(self.read_checked(name))) as archive:
            return {key: archive[key] for key in archive.files}

    def read_json(self, name: str) -> Any:
        """The content of the JSON file ``name``, or None when it is missing or damaged."""
        try:
            return json.loads(self.read_checked(name))
        except (OSError, ValueError, DamagedFile):
            return None

    def problem(self, name: str) -> str | None:
        """Why the stored file ``name`` is unusable (missing, not its recorded sha256, or an
        archive failing its CRCs), or None."""
        try:
            data = self.read_bytes(name)
            problem = self.checksum_problem(name, data)
            if problem is None and name.endswith(".npz"):
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    bad = archive.testzip()
                problem = f"{name} is damaged ({bad} fails its CRC check)" if bad else None
        except FileNotFoundError:
            return f"{name} is missing"
        except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
            return f"{name} is damaged ({type(exc).__name__}: {exc})"
        return problem

    def result_problem(self, thorough: bool = False) -> str | None:
        """Why the folder holds no usable result, or None when it does: ``metrics.json`` must
        parse to an object and ``logits.npz`` must open as an archive of
        :data:`RESULT_ARRAYS`; ``thorough`` also checks every byte of both against the recorded
        sha256 and the archive's CRCs."""
        if not self.exists(self.METRICS):
            return f"{self.METRICS} is missing"
        try:
            metrics = json.loads(self.read_bytes(self.METRICS))
        except (OSError, ValueError):
            metrics = None
        if not isinstance(metrics, dict):
            return f"{self.METRICS} is damaged"
        try:
            with zipfile.ZipFile(self.path / self.LOGITS) as archive:
                names = archive.namelist()
        except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
            return f"{self.LOGITS} is damaged ({type(exc).__name__}: {exc})"
        missing = [a for a in self.RESULT_ARRAYS if f"{a}.npy" not in names]
        if missing:
            return f"{self.LOGITS} lacks {', '.join(missing)}"
        if thorough:
            return self.checksum_problem(self.METRICS) or self.problem(self.LOGITS)
        return None
