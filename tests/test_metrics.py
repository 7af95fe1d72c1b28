"""Ingest metrics: figures from the catalog, written as an atomic node-exporter textfile."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from support.samplecard import sample_card

from photo_ingest.ingest.sessions import failure_class
from photo_ingest.metrics import IngestCollector, write_textfile


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_textfile_reports_the_catalog(tmp_path: Path, cli: Callable[..., Any],
                                      db: psycopg.Connection[Any]) -> None:
    sample_card(tmp_path / "card")
    assert cli("ingest", tmp_path / "card").returncode == 0
    assert cli("ingest", tmp_path / "card").returncode == 0
    old_umask = os.umask(0o077)  # as under the metadata unit
    try:
        path = write_textfile(tmp_path / "textfiles", "ingest", IngestCollector(db))
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o644  # node_exporter must be able to read it
    assert path.name == "photo_ingest_ingest.prom"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    m = samples(path)
    assert m[("photo_ingest_ingest_files_total", (("outcome", "copied"),))] == 15
    assert m[("photo_ingest_ingest_files_total", (("outcome", "duplicate"),))] == 17
    assert m[("photo_ingest_ingest_files_total", (("outcome", "skipped"),))] == 2
    assert m[("photo_ingest_ingest_skipped_files_total", (("reason", "not a media file"),))] == 2
    assert m[("photo_ingest_ingest_sessions_total", (("status", "completed"),))] == 2
    assert m[("photo_ingest_library_assets", (("media_type", "video"),))] == 2
    copied = db.execute("SELECT sum(bytes_copied) AS b FROM ingest_sessions").fetchone()
    assert copied is not None
    assert m[("photo_ingest_ingest_bytes_total", ())] == copied["b"]
    assert m[("photo_ingest_ingest_last_success_timestamp_seconds", ())] > 1.7e9


def test_failure_reasons_fall_into_few_classes() -> None:
    assert failure_class("reading the source failed: Input/output error") == "read_error"
    assert failure_class("verify failed: the copy on storage has SHA-1 …") == "verify_mismatch"
    assert failure_class("not attempted: library filesystem is full") == "not_attempted"
    assert failure_class("file changed size while being read: …") == "source_changed"
    assert failure_class("something new") == "other"


def test_extract_writes_the_metadata_textfile(tmp_path: Path,
                                              make_config: Callable[..., Path]) -> None:
    from conftest import run_cli

    config = make_config()
    config.write_text(config.read_text() + f'[metrics]\ntextfile_dir = "{tmp_path}/prom"\n')
    sample_card(tmp_path / "card")
    assert run_cli(config, "ingest", tmp_path / "card").returncode == 0
    assert run_cli(config, "extract").returncode == 0
    m = samples(tmp_path / "prom/photo_ingest_metadata.prom")
    assert m[("photo_ingest_metadata_backlog_assets", ())] == 0
    assert m[("photo_ingest_metadata_assets", (("status", "ok"),))] == 13
    assert m[("photo_ingest_metadata_last_success_timestamp_seconds", ())] > 1.7e9
