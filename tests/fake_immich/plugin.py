"""Pytest fixtures for the fake Immich.

Enable them for every test under ``tests/`` with one line in ``tests/conftest.py``::

    pytest_plugins = ["fake_immich.plugin"]

Fixtures:

``fake_immich``          a started ``FakeImmich`` (no users yet; create keys with
                         ``fake_immich.create_api_key(...)``), storage under ``tmp_path``.
``fake_immich_factory``  ``make(**kwargs) -> FakeImmich`` for servers with other settings
                         (``service_time``, ``upload_service_time``, ``validate``, ...);
                         every server made is started and stopped by the fixture.
``immich_key``           an ``all``-permission API key of user ``alice`` on ``fake_immich``.

At teardown every server must have ``validation_errors == []``: a test that provokes
invalid requests on purpose consumes them with ``server.take_validation_errors()``.

Without Immich's OpenAPI document (a clone that is not beside ``shared/``) the tests that
need the fake are skipped, and the run says so at its end; with
``PHOTO_INGEST_REQUIRE_IMMICH_SPEC=1`` (CI) they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .server import FakeImmich
from .validation import SpecMissing, format_failures

STRICT = "PHOTO_INGEST_REQUIRE_IMMICH_SPEC"
_skipped: list[str] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _skip_without_spec(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _skip_without_spec(item))


def _skip_without_spec(item: pytest.Item) -> Iterator[None]:
    try:
        return (yield)
    except SpecMissing as exc:
        if os.environ.get(STRICT) == "1":
            raise
        _skipped.append(item.nodeid)
        pytest.skip(str(exc))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped:
        terminalreporter.write_line(
            f"WARNING: {len(_skipped)} tests of the Immich sync were SKIPPED: Immich's OpenAPI "
            "document was not found (see tests/fake_immich/README.md)", yellow=True, bold=True)


@pytest.fixture
def fake_immich_factory(tmp_path: Path) -> Iterator[Callable[..., FakeImmich]]:
    servers: list[FakeImmich] = []

    def make(**kwargs: Any) -> FakeImmich:
        kwargs.setdefault("storage_dir", tmp_path / f"fake-immich-{len(servers)}")
        server = FakeImmich(**kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()
    failures = [f for server in servers for f in server.validation_errors]
    assert not failures, ("the fake Immich saw requests or sent responses that do not "
                          "match Immich's OpenAPI document:\n" + format_failures(failures))


@pytest.fixture
def fake_immich(fake_immich_factory: Callable[..., FakeImmich]) -> FakeImmich:
    return fake_immich_factory()


@pytest.fixture
def immich_key(fake_immich: FakeImmich) -> str:
    return fake_immich.create_api_key(user="alice", permissions=["all"])
