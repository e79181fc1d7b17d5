"""Leases: which process may write a run, and for how long it keeps that right without renewing
it (docs/reliability.md, "Leases").

A claim records its owner (``host:pid``), a heartbeat time and a token of its own. The holder
renews the heartbeat while it trains; a lease whose heartbeat is older than
:func:`lease_seconds`, or whose owner on this host has exited, is dead and the next command takes
the run over with a new token. Every write of the old holder is fenced by its token, so a process
that wakes after a takeover (Ctrl-Z, a suspended laptop, a paused VM) stops instead of writing.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time
from pathlib import Path

from calibench.errors import CalibenchError

LEASE_SECONDS = 300.0
"""A lease is stale once its heartbeat is this old (the holder renews it every tenth of it), and
at once when its holder ran on this host and its process has gone."""
LEASE_ENV = "CALIBENCH_LEASE_SECONDS"
"""Environment variable that replaces :data:`LEASE_SECONDS` (tests shorten it to pause a
process past its lease)."""
HEARTBEATS_PER_LEASE = 10


class LeaseLost(Exception):
    """This process's lease of a run went stale and another process took the run over: it must
    stop writing that run."""


def lease_seconds() -> float:
    """How old a heartbeat may grow before its lease is stale: :data:`LEASE_SECONDS`, or the
    number in the environment variable :data:`LEASE_ENV`."""
    text = os.environ.get(LEASE_ENV)
    if text is None:
        return LEASE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise CalibenchError(
            f"{LEASE_ENV}={text!r} is not a positive number of seconds; unset it or give one."
        )
    return value


def heartbeat_seconds() -> float:
    """How often a holder renews its lease: :data:`HEARTBEATS_PER_LEASE` times per lease."""
    return lease_seconds() / HEARTBEATS_PER_LEASE


def owner_id(pid: int | None = None) -> str:
    """``host:pid`` of this process (or of process ``pid`` on this host): the owner recorded in
    a lease."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def new_token() -> str:
    """A token that names one claim of a run and no other."""
    return secrets.token_hex(8)


def owner_alive(owner: str | None, heartbeat: float | None) -> bool:
    """Whether the process holding a lease still lives: its heartbeat is younger than
    :func:`lease_seconds` and, on this host, its process id still exists (so a death here is
    seen at once, and a reused process id does not keep a dead lease forever)."""
    if not owner or heartbeat is None or time.time() - heartbeat >= lease_seconds():
        return False
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return process_lives(int(pid))
    return True


def process_lives(pid: int) -> bool:
    """Whether process ``pid`` of this host exists and has not exited (a zombie, an exited
    process its parent has not reaped yet, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])
