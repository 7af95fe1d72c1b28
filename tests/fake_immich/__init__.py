"""A fake Immich 3.2.x server for photo-ingest's tests and benchmarks.

``FakeImmich`` serves Immich's HTTP API (the parts photo-ingest and the official CLI use)
with Immich's semantics, validates every request and response against Immich's OpenAPI
document and injects faults on demand.  Pytest fixtures live in ``fake_immich.plugin``.
See README.md in this directory.
"""

from .faults import KINDS as FAULT_KINDS
from .faults import Fault, Faults
from .server import VERSION, FakeImmich
from .state import Album, ApiKey, Asset, Library, RequestRecord, User
from .validation import ImmichSpec, Problem, ValidationFailure, get_spec

__all__ = [
    "FAULT_KINDS",
    "VERSION",
    "Album",
    "ApiKey",
    "Asset",
    "FakeImmich",
    "Fault",
    "Faults",
    "ImmichSpec",
    "Library",
    "Problem",
    "RequestRecord",
    "User",
    "ValidationFailure",
    "get_spec",
]
