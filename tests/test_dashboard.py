"""The shipped Grafana dashboard and alert rules: valid, laid out, and every metric real."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client import CollectorRegistry
from support.samplecard import sample_card

from photo_ingest.immich.metrics import SyncMetrics
from photo_ingest.metrics import IngestCollector, MetadataCollector
from photo_ingest.mirror.metrics import MirrorCollector, VerifyCollector
from photo_ingest.notify.metrics import NotifyCollector
from photo_ingest.watch.metrics import WatchMetrics

METRIC = re.compile(r"\bphoto_ingest_[a-z0-9_]+")


def shipped(name: str) -> str:
    return resources.files("photo_ingest").joinpath("dashboards", name).read_text()


@pytest.fixture
def exposed(tmp_path: Path, cli: Callable[..., Any], db: psycopg.Connection[Any]) -> set[str]:
    """Every metric name the project exposes, from a catalog with real sessions in it."""
    sample_card(tmp_path / "card")
    assert cli("ingest", tmp_path / "card", "--label", "EOS_DIGITAL").returncode == 0
    assert cli("extract").returncode == 0
    registry = CollectorRegistry()
    registry.register(IngestCollector(db))
    registry.register(MetadataCollector(db))
    for collector in (MirrorCollector, VerifyCollector, NotifyCollector):
        registry.register(collector(db))
    names: set[str] = set()
    for reg in (registry, SyncMetrics().registry, WatchMetrics().registry):
        for family in reg.collect():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
            names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


def test_dashboard_model_is_valid_and_laid_out() -> None:
    dash = json.loads(shipped("photo-ingest.json"))
    assert dash["uid"] == "photo-ingest" and dash["schemaVersion"] >= 36
    assert dash["templating"]["list"][0]["type"] == "datasource"
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
    titles = {p["title"] for p in panels}
    assert {"Ingest throughput", "Sessions per card", "Metadata backlog", "Immich backlog",
            "Failed files by reason", "Last ingest success", "Mirror available",
            "Mirror backlog", "Last scrub", "Scrub findings", "Notifications", "Watcher up",
            "Files settling", "Watched files"} <= titles


def test_dashboard_and_alerts_use_only_real_metrics(exposed: set[str]) -> None:
    dash = json.loads(shipped("photo-ingest.json"))
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load(shipped("alerts.yml"))["groups"][0]["rules"]
    exprs += [r["expr"] for r in rules]
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used - exposed == set()
    assert len(used) >= 15


def test_alert_rules_are_complete() -> None:
    rules = yaml.safe_load(shipped("alerts.yml"))["groups"][0]["rules"]
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)) >= 6
    for r in rules:
        assert r["labels"]["severity"] in ("info", "warning", "critical")
        assert r["annotations"]["summary"]
    assert {"PhotoIngestSessionFailed", "PhotoIngestMetadataBacklogStalled",
            "PhotoIngestImmichBacklogStalled"} <= set(names)
