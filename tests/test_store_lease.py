"""calibench/store/lease.py: when a lease is alive, and how long it lasts."""

from __future__ import annotations

import time

import pytest

from calibench.errors import CalibenchError
from calibench.store.lease import (
    LEASE_ENV,
    LEASE_SECONDS,
    heartbeat_seconds,
    lease_seconds,
    owner_alive,
    owner_id,
)


def test_owner_alive():
    now = time.time()
    assert owner_alive(owner_id(), now)
    assert not owner_alive(owner_id(), now - LEASE_SECONDS - 1)
    assert not owner_alive(owner_id(), None) and not owner_alive(None, now)
    assert owner_alive("some-other-host:1", now)
    assert not owner_alive("some-other-host:1", now - LEASE_SECONDS - 1)


def test_the_lease_can_be_shortened_and_the_heartbeat_follows(monkeypatch):
    assert (lease_seconds(), heartbeat_seconds()) == (LEASE_SECONDS, LEASE_SECONDS / 10)
    monkeypatch.setenv(LEASE_ENV, "2")
    assert (lease_seconds(), heartbeat_seconds()) == (2.0, 0.2)
    assert not owner_alive("some-other-host:1", time.time() - 3)
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv(LEASE_ENV, bad)
        with pytest.raises(CalibenchError, match=LEASE_ENV):
            lease_seconds()
