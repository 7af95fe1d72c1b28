"""Fault injection: what a flaky network, an overloaded server or a reverse proxy in front
of Immich does to a client.

``server.faults.add(path_regex, kind, count=1, method=None, skip=0, **params)`` arms a
fault for the next *count* requests (``None``: every request) whose path matches
``path_regex`` (``re.search`` on the path, e.g. ``r"^/api/assets$"``) and, if given, whose
method matches; the first *skip* matching requests pass untouched.  Faults act before
authentication, like infrastructure in front of the server, and their responses are not
validated against the OpenAPI document.  Kinds and their parameters:

``status``      answer ``status`` (default 503) with ``{"message": message}``; the request
                body is read and discarded first unless ``drain=False``; optional
                ``retry_after`` (seconds) adds a ``Retry-After`` header.
``rate_limit``  429 with ``Retry-After: retry_after`` (default 1) seconds; body drained
                like ``status``.
``delay``       wait ``seconds`` (default 1.0), then handle the request normally.
``reset``       read ``after_bytes`` (default 0) bytes of the request body, then reset the
                TCP connection (RST) without answering.
``slow_body``   handle normally, send the status line and headers at once, then trickle
                the body in ``chunk_size`` (default 16) byte pieces every ``interval``
                (default 0.25) seconds.
``lost_answer`` handle the request normally (an upload is stored), then reset the TCP
                connection instead of sending the answer: the client cannot know it
                worked. The status it would have sent is in ``record.extra["lost_answer"]``.
``timeout``     never answer: hold the request for ``seconds`` (default: until the client
                gives up or the server stops), then close the connection without a
                response.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

KINDS = ("status", "rate_limit", "delay", "reset", "slow_body", "timeout", "lost_answer")

_DEFAULTS: dict[str, dict[str, Any]] = {
    "status": {"status": 503, "drain": True},
    "rate_limit": {"retry_after": 1, "drain": True},
    "delay": {"seconds": 1.0},
    "reset": {"after_bytes": 0},
    "slow_body": {"chunk_size": 16, "interval": 0.25},
    "timeout": {"seconds": None},
    "lost_answer": {},
}

_ALLOWED = {
    "status": {"status", "message", "drain", "retry_after"},
    "rate_limit": {"retry_after", "message", "drain"},
    "delay": {"seconds"},
    "reset": {"after_bytes"},
    "slow_body": {"chunk_size", "interval"},
    "timeout": {"seconds"},
    "lost_answer": set(),
}


@dataclass
class Fault:
    pattern: re.Pattern[str]
    kind: str
    count: int | None
    method: str | None
    skip: int
    params: dict[str, Any]
    hits: int = 0  # requests this fault acted on
    seen: int = 0  # matching requests, including skipped ones

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.hits >= self.count

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.pattern.search(path) is not None


@dataclass
class Faults:
    """The armed faults of one server (thread-safe)."""

    _faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path_regex: str, kind: str, count: int | None = 1, *,
            method: str | None = None, skip: int = 0, **params: Any) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(KINDS)}")
        unknown = set(params) - _ALLOWED[kind]
        if unknown:
            raise TypeError(f"fault {kind!r} does not take {sorted(unknown)}")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 or None")
        fault = Fault(re.compile(path_regex), kind, count, method, skip,
                      {**_DEFAULTS[kind], **params})
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The first armed fault for this request, counting it as used."""
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault.matches(method, path):
                    continue
                fault.seen += 1
                if fault.seen <= fault.skip:
                    continue
                fault.hits += 1
                return fault
        return None

    def __iter__(self) -> Iterator[Fault]:
        with self._lock:
            return iter(list(self._faults))

    def __len__(self) -> int:
        with self._lock:
            return sum(not f.exhausted for f in self._faults)
