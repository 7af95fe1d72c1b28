"""Fidelity check (1): every request the fake receives and every response it sends is
validated against Immich's own OpenAPI document with openapi-core.

The document is ``<repo>/../shared/immich/openapi.json`` (Immich 3.2.2, not copied into
the project; ``IMMICH_OPENAPI_SPEC`` overrides the path).  It is loaded once per process and
patched *in memory* for the few places where the published document cannot be used as-is
by a Python validator.  Each patch is narrow and listed in ``ImmichSpec.quirks``:

* ``components.securitySchemes.bearer`` carries ``"in": "header"``, which OpenAPI 3.0 does
  not allow for an ``http`` scheme (the only error openapi-spec-validator finds besides the
  next one).  The key is dropped.
* The e-mail ``pattern`` (``UserAdminResponseDto.email`` and others) uses ECMAScript
  Unicode property escapes (``\\p{L}``, ``\\p{M}``, ``\\p{N}``) that Python's ``re`` cannot
  compile.  They are translated to ``\\w`` / ``[^\\W_]`` (slightly more permissive for
  combining marks and ``_`` in domain labels).
* ``{"allOf": [{"$ref": X}], "nullable": true}`` (e.g. ``UserAdminResponseDto.license``,
  ``AssetResponseDto.stack``): openapi-core applies ``nullable`` to the wrapper only, so the
  ``null`` that Immich really sends fails the referenced object schema.  Rewritten to
  ``anyOf: [X, null]``.

Validation itself is stricter than the document in one respect and more lenient in two:

* Undeclared properties in request and response bodies are reported
  (``additional_properties_default_policy="forbid"``).  Immich 3.x ignores unknown request
  fields (Zod objects are not strict), so the fake reports them but does not reject the
  request: they are client bugs (e.g. the v2 fields ``deviceAssetId``/``deviceId`` that
  3.x removed) that a real server would silently drop.  The one field tolerated without a
  report is the official CLI's ``fileSize`` multipart field on ``POST /assets``.
* Multipart text fields are strings on the wire; openapi-core does not cast them, so the
  declared primitive types (``isFavorite: boolean``, ``duration: integer``) are cast before
  validation (``"true"``/``"false"``, decimal integers), as Immich's Zod schemas do.
* File parts of an upload are streamed to disk and never held in memory, so the body that
  is validated is a skeleton: every field as received, every file part with an empty
  payload (its presence, name and file name are what the schema can check).

Responses with a status the document declares are validated against it.  The document
declares no error responses at all (only ``GET /server/license`` has a 404), so 4xx/5xx
responses are checked against Immich 3.x's error shape instead: a JSON object
``{"message": str | [str], "errors"?: [...]}``, with the correlation id in the
``X-Correlation-ID`` header (3.0 moved it there and dropped ``error``/``statusCode``).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.deserializing.media_types.util import data_form_loads
from openapi_core.validation.request.validators import (
    V30RequestParametersValidator,
    V30RequestSecurityValidator,
)
from werkzeug.datastructures import Headers, ImmutableMultiDict

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPEC_PATH = REPO.parent / "shared" / "immich" / "openapi.json"

#: Multipart fields sent by the official CLI 3.2.2 that the document does not declare;
#: Immich ignores them.  Keyed by operationId.
TOLERATED_UNDECLARED_FIELDS: Mapping[str, frozenset[str]] = {
    "uploadAsset": frozenset({"fileSize"}),
}


def spec_path() -> Path:
    return Path(os.environ.get("IMMICH_OPENAPI_SPEC", DEFAULT_SPEC_PATH))


@dataclass(frozen=True)
class Problem:
    """One way in which a message violates the document."""

    message: str
    location: str = ""
    keyword: str = ""

    @property
    def blocking(self) -> bool:
        """Would the real server refuse the request with 400?  Undeclared fields it
        ignores; missing or undocumented credentials are the AuthGuard's business."""
        return self.keyword not in ("additionalProperties", "undeclaredField",
                                    "SecurityValidationError")

    def __str__(self) -> str:
        where = f" at {self.location}" if self.location else ""
        return f"{self.message}{where}"


@dataclass
class ValidationFailure:
    """A request or response of the fake that does not match the document."""

    direction: str  # "request" | "response"
    method: str
    path: str
    operation_id: str | None
    status: int | None
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        status = f" -> {self.status}" if self.status is not None else ""
        lines = [f"{self.direction} {self.method} {self.path}{status} "
                 f"({self.operation_id or 'no operation'}):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


@dataclass(frozen=True)
class Operation:
    method: str  # lower case
    template: str  # as in the document, without the /api server prefix
    operation_id: str
    permission: str | None  # x-immich-permission
    admin_only: bool  # x-immich-admin-only
    secured: bool  # has a security requirement
    statuses: frozenset[str]
    body_properties: frozenset[str] | None
    regex: re.Pattern[str]

    def path_params(self, path: str) -> dict[str, str]:
        match = self.regex.fullmatch(path)
        return dict(match.groupdict()) if match else {}


# --- spec loading and quirks -------------------------------------------------------------

_PROPERTY_CLASSES = (
    (r"[\p{L}\p{N}]", r"[^\W_]"),
    (r"\p{L}\p{M}\p{N}", r"\w"),
)


def _translate_pattern(pattern: str) -> str:
    for ecma, python in _PROPERTY_CLASSES:
        pattern = pattern.replace(ecma, python)
    if r"\p{" in pattern:
        raise ValueError(f"untranslated Unicode property escape in pattern {pattern!r}")
    re.compile(pattern)
    return pattern


def patch_spec(spec: dict[str, Any]) -> list[str]:
    """Apply the documented quirk patches to *spec* in place; return what was changed."""
    quirks: list[str] = []
    bearer = spec.get("components", {}).get("securitySchemes", {}).get("bearer")
    if isinstance(bearer, dict) and bearer.get("type") == "http" and "in" in bearer:
        del bearer["in"]
        quirks.append("securitySchemes.bearer: dropped 'in' (not allowed for type http)")

    patterns: set[str] = set()
    nullable_refs: set[str] = set()

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            pattern = node.get("pattern")
            if isinstance(pattern, str) and r"\p{" in pattern:
                node["pattern"] = _translate_pattern(pattern)
                patterns.add(where)
            all_of = node.get("allOf")
            if node.get("nullable") is True and isinstance(all_of, list) and len(all_of) == 1:
                del node["allOf"], node["nullable"]
                node["anyOf"] = [all_of[0], {"nullable": True, "enum": [None]}]
                nullable_refs.add(where)
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(spec, "#")
    if patterns:
        quirks.append(f"ECMAScript \\p{{…}} escapes translated in {len(patterns)} pattern(s): "
                      + ", ".join(sorted(patterns)))
    if nullable_refs:
        quirks.append(f"allOf+nullable rewritten to anyOf[ref, null] in {len(nullable_refs)} "
                      "place(s): " + ", ".join(sorted(nullable_refs)))
    return quirks


class _Request:
    """openapi-core ``Request`` protocol over already-received data."""

    def __init__(self, host_url: str, method: str, path: str,
                 query: Iterable[tuple[str, str]], headers: Iterable[tuple[str, str]],
                 content_type: str, body: bytes | None) -> None:
        self.host_url = host_url
        self.path = path
        self.method = method.lower()
        self.body = body
        self.content_type = content_type.lower()
        header_list = list(headers)
        cookies: list[tuple[str, str]] = []
        for name, value in header_list:
            if name.lower() == "cookie":
                for item in value.split(";"):
                    key, _, val = item.strip().partition("=")
                    if key:
                        cookies.append((key, val))
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(query)),
            header=Headers(header_list),
            cookie=ImmutableMultiDict(cookies),
        )


class _Response:
    def __init__(self, status: int, content_type: str, headers: Iterable[tuple[str, str]],
                 body: bytes | None) -> None:
        self.status_code = status
        self.content_type = content_type.lower()
        self.headers = Headers(list(headers))
        self.data = body


def _flatten(exc: BaseException, prefix: str = "") -> list[Problem]:
    """Turn an openapi-core error (with its chained causes) into problems."""
    location = prefix
    name = getattr(exc, "name", None)
    where = getattr(exc, "location", None)
    if isinstance(name, str):
        location = f"{where}.{name}" if isinstance(where, str) else name
    current: BaseException | None = exc
    while current is not None:
        schema_errors = getattr(current, "schema_errors", None)
        if schema_errors:
            problems = []
            for error in schema_errors:
                path = ".".join(str(p) for p in error.absolute_path)
                loc = ".".join(x for x in (location, path) if x)
                keyword = str(error.validator)
                if error.message.startswith("Additional properties are not allowed"):
                    keyword = "additionalProperties"  # reported under "properties"
                problems.append(Problem(error.message, loc, keyword))
            return problems
        current = current.__cause__
    cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
    return [Problem(f"{type(exc).__name__}: {exc}{cause}", location, type(exc).__name__)]


class SpecMissing(FileNotFoundError):
    """Immich's OpenAPI document is not where the fake looks for it."""


class ImmichSpec:
    """The patched document, its operations and openapi-core validators."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or spec_path()
        if not self.path.is_file():
            raise SpecMissing(
                f"Immich OpenAPI document not found at {self.path}; the fake Immich needs "
                "the repository's sibling shared/immich/openapi.json (or IMMICH_OPENAPI_SPEC)")
        self.raw: dict[str, Any] = json.loads(self.path.read_text())
        self.document = copy.deepcopy(self.raw)
        self.quirks = patch_spec(self.document)
        self.version = str(self.document["info"]["version"])
        self.operations = self._index_operations()
        self._multipart_types = self._multipart_field_types()
        self.config = Config(
            spec_validator_cls=None,  # checked separately, see tests (quirks above)
            additional_properties_default_policy="forbid",
            extra_media_type_deserializers={"multipart/form-data": self._multipart_loads},
        )
        self.api = OpenAPI.from_dict(self.document, config=self.config)
        self._security_validator = V30RequestSecurityValidator(self.api.spec)
        self._parameters_validator = V30RequestParametersValidator(self.api.spec)
        self._lock = threading.Lock()

    # operations -------------------------------------------------------------------------

    def _index_operations(self) -> dict[str, list[Operation]]:
        by_method: dict[str, list[Operation]] = {}
        schemas = self.document["components"]["schemas"]
        for template, item in self.document["paths"].items():
            regex = re.compile("/api" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)",
                                               re.escape(template)))
            for method, op in item.items():
                if not isinstance(op, dict) or "operationId" not in op:
                    continue
                body_properties = None
                content = op.get("requestBody", {}).get("content", {})
                for media in content.values():
                    ref = media.get("schema", {}).get("$ref", "")
                    if ref.startswith("#/components/schemas/"):
                        schema = schemas[ref.rsplit("/", 1)[1]]
                        body_properties = frozenset(schema.get("properties", {}))
                by_method.setdefault(method, []).append(Operation(
                    method=method,
                    template=template,
                    operation_id=op["operationId"],
                    permission=op.get("x-immich-permission"),
                    admin_only=bool(op.get("x-immich-admin-only")),
                    secured=bool(op.get("security")),
                    statuses=frozenset(op.get("responses", {})),
                    body_properties=body_properties,
                    regex=regex,
                ))
        for ops in by_method.values():  # literal segments win over {params}
            ops.sort(key=lambda o: (o.template.count("{"), o.template))
        return by_method

    def find_operation(self, method: str, path: str) -> Operation | None:
        for op in self.operations.get(method.lower(), ()):
            if op.regex.fullmatch(path):
                return op
        return None

    def has_path(self, path: str) -> bool:
        return any(op.regex.fullmatch(path)
                   for ops in self.operations.values() for op in ops)

    # multipart ----------------------------------------------------------------------------

    def _multipart_field_types(self) -> dict[str, str]:
        schemas = self.document["components"]["schemas"]
        types: dict[str, str] = {}
        for item in self.document["paths"].values():
            for op in item.values():
                if not isinstance(op, dict):
                    continue
                media = op.get("requestBody", {}).get("content", {}).get("multipart/form-data")
                if not media:
                    continue
                schema = schemas[media["schema"]["$ref"].rsplit("/", 1)[1]]
                for name, prop in schema.get("properties", {}).items():
                    kind = prop.get("type")
                    if (kind in ("boolean", "integer", "number")
                            and types.setdefault(name, kind) != kind):
                        raise ValueError(f"multipart field {name} has conflicting types")
        return types

    def _multipart_loads(self, value: bytes, **parameters: str) -> Mapping[str, Any]:
        form = data_form_loads(value, **parameters)
        pairs = form.items(multi=True) if isinstance(form, ImmutableMultiDict) else form.items()
        items: list[tuple[str, Any]] = []
        for name, payload in pairs:
            items.append((name, self._cast(name, payload)))
        return ImmutableMultiDict(items)

    def _cast(self, name: str, payload: bytes) -> Any:
        kind = self._multipart_types.get(name)
        text = payload.decode("utf-8", errors="replace")
        if kind == "boolean" and text in ("true", "false"):
            return text == "true"
        if kind == "integer" and re.fullmatch(r"-?\d+", text):
            return int(text)
        if kind == "number":
            try:
                return float(text)
            except ValueError:
                return payload
        return payload

    # validation ---------------------------------------------------------------------------

    def validate_request(self, host_url: str, method: str, path: str,
                         query: Iterable[tuple[str, str]], headers: Iterable[tuple[str, str]],
                         content_type: str, body: bytes | None, *,
                         body_received: bool = True) -> list[Problem]:
        """Problems of a request; with ``body_received=False`` only security and parameters
        are checked (the body was deliberately not read)."""
        request = _Request(host_url, method, path, query, headers, content_type, body)
        with self._lock:
            if body_received:
                errors = list(self.api.iter_request_errors(request))
            else:
                errors = list(self._security_validator.iter_errors(request))
                errors += list(self._parameters_validator.iter_errors(request))
        problems: list[Problem] = []
        for error in errors:
            problems += _flatten(error)
        return problems

    def undeclared_fields(self, op: Operation, names: Iterable[str]) -> list[Problem]:
        """Multipart fields the operation's schema does not declare (openapi-core drops
        them silently while decoding multipart bodies)."""
        if op.body_properties is None:
            return []
        tolerated = TOLERATED_UNDECLARED_FIELDS.get(op.operation_id, frozenset())
        return [Problem(f"undeclared multipart field {name!r}", f"body.{name}",
                        "undeclaredField")
                for name in dict.fromkeys(names)
                if name not in op.body_properties and name not in tolerated]

    def validate_response(self, host_url: str, method: str, path: str,
                          query: Iterable[tuple[str, str]],
                          request_headers: Iterable[tuple[str, str]],
                          request_content_type: str, status: int, content_type: str,
                          headers: Iterable[tuple[str, str]],
                          body: bytes | None) -> list[Problem]:
        op = self.find_operation(method, path)
        if op is not None and str(status) not in op.statuses and status >= 400:
            return check_error_body(content_type, body)
        request = _Request(host_url, method, path, query, request_headers,
                           request_content_type, None)
        response = _Response(status, content_type, headers, body)
        with self._lock:
            errors = list(self.api.iter_response_errors(request, response))
        problems: list[Problem] = []
        for error in errors:
            problems += _flatten(error, "response")
        return problems


def check_error_body(content_type: str, body: bytes | None) -> list[Problem]:
    """Immich 3.x error bodies: ``{"message": str | [str], "errors"?: [...]}``."""
    if not content_type.lower().startswith("application/json"):
        return [Problem(f"error response is {content_type!r}, not JSON", "response",
                        "errorShape")]
    try:
        data = json.loads(body or b"")
    except ValueError as exc:
        return [Problem(f"error body is not JSON: {exc}", "response", "errorShape")]
    if not isinstance(data, dict):
        return [Problem("error body is not an object", "response", "errorShape")]
    problems = []
    message = data.get("message")
    if not (isinstance(message, str)
            or (isinstance(message, list) and all(isinstance(m, str) for m in message))):
        problems.append(Problem("error body lacks a string 'message'", "response.message",
                                "errorShape"))
    extra = set(data) - {"message", "errors"}
    if extra:
        problems.append(Problem(f"error body has keys Immich 3.x does not send: "
                                f"{sorted(extra)}", "response", "errorShape"))
    if "errors" in data and not isinstance(data["errors"], list):
        problems.append(Problem("'errors' is not a list", "response.errors", "errorShape"))
    return problems


@functools.cache
def get_spec(path: str | None = None) -> ImmichSpec:
    """The process-wide patched document (loading it takes a few hundred ms)."""
    return ImmichSpec(Path(path) if path else None)


def iter_spec_errors(document: Mapping[str, Any]) -> Iterator[str]:
    """openapi-spec-validator's findings for *document* (used by the fidelity tests)."""
    from jsonschema_path import SchemaPath
    from openapi_spec_validator import OpenAPIV30SpecValidator

    validator = OpenAPIV30SpecValidator(SchemaPath.from_dict(dict(document)))
    for error in validator.iter_errors():
        yield str(error).splitlines()[0]


def format_failures(failures: Sequence[ValidationFailure]) -> str:
    return "\n".join(str(f) for f in failures)
