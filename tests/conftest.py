"""Fixtures: a real PostgreSQL server for the session, a fresh database per test, and
helpers to write a config and run the real CLI in a child process."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).parent))

from hypothesis import Phase, settings
from support.pgserver import TempPostgres

pytest_plugins = ["fake_immich.plugin"]  # the fake Immich server and its fixtures

_db_names = itertools.count()

# Property tests and fuzzing (docs/hostile-input.md): CI runs a fixed, derandomized set of
# examples, so a red run is reproducible; HYPOTHESIS_PROFILE=long searches much further.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
settings.register_profile("ci", max_examples=300, derandomize=True, database=None,
                          deadline=None, print_blob=True, phases=_PHASES)
settings.register_profile("long", max_examples=5_000, database=None, deadline=None,
                          print_blob=True, phases=_PHASES)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def pg() -> Iterator[TempPostgres]:
    server = TempPostgres().start()
    yield server
    server.stop()


@pytest.fixture
def dsn(pg: TempPostgres) -> str:
    return pg.create_database(f"t{os.getpid()}_{next(_db_names)}")


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def library(tmp_path: Path) -> Path:
    return tmp_path / "library"


@pytest.fixture
def make_config(tmp_path: Path, dsn: str, library: Path) -> Callable[..., Path]:
    def make(extra: str = "", **ingest: Any) -> Path:
        lines = [f'[library]\npath = "{library}"', extra, f'[database]\nurl = "{dsn}"',
                 "[ingest]"]
        lines += [f"{k} = {_toml(v)}" for k, v in ingest.items()]
        path = tmp_path / "config.toml"
        path.write_text("\n".join(lines) + "\n")
        return path
    return make


@pytest.fixture
def config(make_config: Callable[..., Path]) -> Path:
    return make_config(timezone="Europe/Berlin")


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_cli(config: Path | None, *args: str | os.PathLike[str],
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, as a user would run it."""
    argv = [sys.executable, "-m", "photo_ingest"]
    if config is not None:
        argv += ["--config", str(config)]
    return subprocess.run([*argv, *map(os.fsdecode, args)], capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.fixture
def cli(config: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str | os.PathLike[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(config, *args, **kwargs)
    return run
