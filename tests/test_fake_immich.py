"""The fake Immich server (tests/fake_immich) and its fidelity to Immich 3.2.x.

Fidelity is checked two ways: every request/response is validated against Immich's
OpenAPI document (the fixtures fail a test that leaves validation errors behind), and the
official ``@immich/cli@3.2.2`` uploads to the fake (test_official_cli_*).  All traffic is
real HTTP over loopback.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import sys
import time
import tracemalloc
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_immich import FakeImmich, ValidationFailure, get_spec
from fake_immich.validation import iter_spec_errors

JPEG = b"\xff\xd8\xff\xe0" + b"fake jpeg payload " * 64
CREATED = "2024-06-01T10:11:12.000+02:00"


# --- helpers -----------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def call(server: FakeImmich, method: str, path: str, key: str | None = None, *,
         json_body: Any = None, data: bytes | None = None, content_type: str | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    """One request with urllib (real HTTP, one connection per request)."""
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["x-api-key"] = key
    if json_body is not None:
        data = json.dumps(json_body).encode()
        content_type = "application/json"
    if content_type:
        hdrs["Content-Type"] = content_type
    request = urllib.request.Request(server.url + path, data=data, method=method,
                                     headers=hdrs)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return Reply(resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()})
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.read(), {k.lower(): v for k, v in err.headers.items()})


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]],
              boundary: str = "----photo-ingest-test") -> tuple[bytes, str]:
    """A multipart/form-data body: text fields first, then file parts."""
    out = bytearray()
    for name, value in fields.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n").encode()
    for name, (filename, payload) in files.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                ).encode()
        out += payload + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def upload(server: FakeImmich, key: str, payload: bytes = JPEG, filename: str = "IMG_0001.JPG",
           *, fields: dict[str, str] | None = None, sidecar: bytes | None = None,
           headers: dict[str, str] | None = None) -> Reply:
    form = {"fileCreatedAt": CREATED, "fileModifiedAt": CREATED, **(fields or {})}
    files = {"assetData": (filename, payload)}
    if sidecar is not None:
        files["sidecarData"] = (f"{filename}.xmp", sidecar)
    body, ctype = multipart(form, files)
    return call(server, "POST", "/api/assets", key, data=body, content_type=ctype,
                headers=headers)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def problems_of(failures: list[ValidationFailure]) -> list[str]:
    return [str(p) for f in failures for p in f.problems]


# --- spec and discovery ---------------------------------------------------------------

def test_spec_quirks_are_exactly_the_documented_ones() -> None:
    spec = get_spec()
    assert spec.version == "3.2.2"
    raw_errors = list(iter_spec_errors(spec.raw))
    assert any("'in': 'header'" in e for e in raw_errors)
    assert all("'in': 'header'" in e or "is not a 'regex'" in e for e in raw_errors), raw_errors
    assert list(iter_spec_errors(spec.document)) == []
    assert len(spec.quirks) == 3


def test_discovery_and_public_endpoints(fake_immich: FakeImmich) -> None:
    reply = call(fake_immich, "GET", "/.well-known/immich")
    assert reply.json == {"api": {"endpoint": "/api"}}
    assert call(fake_immich, "GET", "/api/server/version").json == {
        "major": 3, "minor": 2, "patch": 2, "prerelease": None}
    assert call(fake_immich, "GET", "/api/server/ping").json == {"res": "pong"}
    types = call(fake_immich, "GET", "/api/server/media-types").json
    assert ".jpg" in types["image"] and ".cr2" in types["image"] and ".heic" in types["image"]
    assert ".mov" in types["video"] and ".mp4" in types["video"]
    assert types["sidecar"] == [".xmp"]
    assert ".thm" not in types["image"]


# --- authentication and permissions -----------------------------------------------------

def test_authentication_and_permissions(fake_immich: FakeImmich) -> None:
    server = fake_immich
    everything = server.create_api_key("alice", ["all"])
    upload_only = server.create_api_key("alice", ["asset.upload"])

    reply = call(server, "GET", "/api/users/me")
    assert (reply.status, reply.json) == (401, {"message": "Authentication required"})
    assert reply.headers["x-correlation-id"]
    failures = server.take_validation_errors()  # no credentials violates the document
    assert [f.operation_id for f in failures] == ["getMyUser"]
    assert "Security" in problems_of(failures)[0]

    reply = call(server, "GET", "/api/users/me", "not-a-key")
    assert (reply.status, reply.json) == (401, {"message": "Invalid API key"})

    me = call(server, "GET", "/api/users/me", everything).json
    assert me["email"] == "alice@immich.test" and me["isAdmin"] is False
    # Immich also takes the key from ?apiKey=, which the document does not declare.
    assert call(server, "GET", f"/api/users/me?apiKey={everything}").status == 200
    assert "Security" in problems_of(server.take_validation_errors())[0]
    reply = call(server, "GET", "/api/users/me", everything,
                 headers={"X-Correlation-ID": "trace-42"})
    assert reply.headers["x-correlation-id"] == "trace-42"

    # /api-keys/me needs no permission: it is how a client learns what it may do.
    key = call(server, "GET", "/api/api-keys/me", upload_only).json
    assert key["permissions"] == ["asset.upload"]
    reply = call(server, "GET", "/api/users/me", upload_only)
    assert (reply.status, reply.json) == (403, {"message": "Missing required permission: "
                                                           "user.read"})
    assert call(server, "GET", "/api/albums", upload_only).json == {
        "message": "Missing required permission: album.read"}
    assert call(server, "POST", "/api/assets/bulk-upload-check", upload_only,
                json_body={"assets": []}).status == 200

    # Libraries are admin-only, whatever the key's permissions.
    assert call(server, "GET", "/api/libraries", everything).json == {"message": "Forbidden"}
    admin = server.create_api_key("root", ["library.read"], admin=True)
    assert call(server, "GET", "/api/libraries", admin).json == []
    assert call(server, "POST", "/api/libraries/" + str(uuid.uuid4()) + "/scan",
                admin).json == {"message": "Missing required permission: library.update"}


# --- deduplication ------------------------------------------------------------------------

def test_bulk_upload_check_is_per_user_and_reports_trash(fake_immich: FakeImmich) -> None:
    server = fake_immich
    alice = server.create_api_key("alice")
    bob = server.create_api_key("bob")
    kept = server.seed_asset("alice", data=b"kept")
    trashed = server.seed_asset("alice", data=b"trashed", trashed=True)
    new = sha1(b"new")

    items = [{"id": "hex", "checksum": kept.checksum},
             {"id": "base64", "checksum": b64(kept.checksum)},
             {"id": "trashed", "checksum": trashed.checksum},
             {"id": "new", "checksum": new}]
    results = call(server, "POST", "/api/assets/bulk-upload-check", alice,
                   json_body={"assets": items}).json["results"]
    assert results == [
        {"id": "hex", "action": "reject", "reason": "duplicate", "assetId": kept.id,
         "isTrashed": False},
        {"id": "base64", "action": "reject", "reason": "duplicate", "assetId": kept.id,
         "isTrashed": False},
        {"id": "trashed", "action": "reject", "reason": "duplicate", "assetId": trashed.id,
         "isTrashed": True},
        {"id": "new", "action": "accept"},
    ]
    results = call(server, "POST", "/api/assets/bulk-upload-check", bob,
                   json_body={"assets": items}).json["results"]
    assert [r["action"] for r in results] == ["accept"] * 4


def test_upload_creates_then_reports_duplicates(fake_immich: FakeImmich) -> None:
    server = fake_immich
    alice = server.create_api_key("alice")
    bob = server.create_api_key("bob")

    reply = upload(server, alice, sidecar=b"<x:xmpmeta/>", fields={"isFavorite": "true"})
    assert reply.status == 201
    created = reply.json
    assert created["status"] == "created"
    asset = server.assets[created["id"]]
    assert (asset.owner, asset.checksum, asset.filename) == ("alice", sha1(JPEG), "IMG_0001.JPG")
    assert asset.file_created_at == CREATED  # as sent; the API returns it in UTC
    assert asset.path.read_bytes() == JPEG and asset.size == len(JPEG)
    assert asset.has_sidecar and asset.sidecar_path is not None
    assert asset.sidecar_path.read_bytes() == b"<x:xmpmeta/>"
    assert asset.is_favorite and not asset.is_trashed

    info = call(server, "GET", f"/api/assets/{asset.id}", alice).json
    assert info["checksum"] == b64(sha1(JPEG))  # Immich returns base64
    assert info["fileCreatedAt"] == "2024-06-01T08:11:12.000Z"
    assert info["originalFileName"] == "IMG_0001.JPG" and info["type"] == "IMAGE"

    again = upload(server, alice, filename="renamed.jpg")
    assert (again.status, again.json) == (200, {"id": asset.id, "status": "duplicate"})
    other = upload(server, bob)
    assert other.status == 201 and other.json["id"] != asset.id  # dedup is per user
    reply = call(server, "GET", f"/api/assets/{other.json['id']}", alice)
    assert (reply.status, reply.json) == (400, {"message": "Not found or no asset.read access"})
    assert len(server.assets) == 2
    assert not list((server.storage_dir / "incoming").iterdir())


def test_trashed_assets_still_count_as_duplicates(fake_immich: FakeImmich) -> None:
    server = fake_immich
    alice = server.create_api_key("alice")
    first = upload(server, alice).json["id"]
    assert call(server, "DELETE", "/api/assets", alice, json_body={"ids": [first]}).status == 204
    assert server.assets[first].is_trashed
    assert call(server, "GET", f"/api/assets/{first}", alice).json["isTrashed"] is True

    again = upload(server, alice)
    assert (again.status, again.json) == (200, {"id": first, "status": "duplicate"})
    check = call(server, "POST", "/api/assets/bulk-upload-check", alice,
                 json_body={"assets": [{"id": "x", "checksum": sha1(JPEG)}]}).json
    assert check["results"][0]["isTrashed"] is True

    other = upload(server, alice, payload=JPEG + b"2").json["id"]
    server.trash(other)
    assert upload(server, alice, payload=JPEG + b"2").json == {"id": other,
                                                               "status": "duplicate"}
    # Permanent deletion frees the checksum.
    call(server, "DELETE", "/api/assets", alice, json_body={"ids": [first], "force": True})
    assert upload(server, alice).status == 201


def test_checksum_header_answers_before_the_body_is_read(fake_immich: FakeImmich) -> None:
    server = fake_immich
    alice = server.create_api_key("alice")
    known = server.seed_asset("alice", data=JPEG)

    # Announce 50 MB but send only the headers: the answer must come anyway.
    boundary = "xyz"
    head = (f"POST /api/assets HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {alice}\r\n"
            f"x-immich-checksum: {b64(known.checksum)}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {50 * 1024 * 1024}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK"
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {"id": known.id,
                                                            "status": "duplicate"}
    record = next(r for r in server.requests if r.operation_id == "uploadAsset")
    assert record.body_bytes_read == 0 and record.extra["early_duplicate"]

    # Hex works too; an unknown checksum means a normal upload, header kept for inspection.
    assert upload(server, alice, headers={"x-immich-checksum": known.checksum}).json == {
        "id": known.id, "status": "duplicate"}
    payload = JPEG + b"new"
    reply = upload(server, alice, payload, headers={"x-immich-checksum": sha1(payload)})
    assert reply.status == 201
    assert server.assets[reply.json["id"]].header_checksum == sha1(payload)


def test_unsupported_files_are_refused(fake_immich: FakeImmich) -> None:
    server = fake_immich
    alice = server.create_api_key("alice")
    reply = upload(server, alice, b"hello", filename="notes.txt")
    assert (reply.status, reply.json) == (400, {"message": "Unsupported file type notes.txt"})
    reply = upload(server, alice, filename="IMG_0001.THM")
    assert reply.json == {"message": "Unsupported file type IMG_0001.THM"}
    # Immich checks `filename` (if it came before the part) for the sidecar part too:
    # send sidecarData before a `filename` field, or leave `filename` out.
    reply = upload(server, alice, fields={"filename": "IMG_0001.JPG"}, sidecar=b"<xmp/>")
    assert reply.json == {"message": "Unsupported file type IMG_0001.JPG"}
    assert server.assets == {}


def test_live_photo_link(fake_immich: FakeImmich) -> None:
    server = fake_immich
    alice = server.create_api_key("alice")
    video = upload(server, alice, b"mov bytes", filename="IMG_0001.MOV").json["id"]
    photo = upload(server, alice, fields={"livePhotoVideoId": video}).json["id"]
    assert server.assets[photo].live_photo_video_id == video
    assert server.assets[video].type == "VIDEO" and server.assets[video].visibility == "hidden"
    reply = upload(server, alice, JPEG + b"x", fields={"livePhotoVideoId": photo})
    assert reply.json == {"message": "Live photo video must be a video"}
    reply = upload(server, alice, JPEG + b"y", fields={"livePhotoVideoId": str(uuid.uuid4())})
    assert reply.json == {"message": "Live photo video not found"}


# --- albums and libraries -----------------------------------------------------------------

def test_albums(fake_immich: FakeImmich) -> None:
    server = fake_immich
    alice = server.create_api_key("alice")
    bob = server.create_api_key("bob")
    mine = [server.seed_asset("alice", data=bytes([i])).id for i in range(3)]
    theirs = server.seed_asset("bob", data=b"bob").id

    reply = call(server, "POST", "/api/albums", alice,
                 json_body={"albumName": "2024-06-01", "assetIds": [mine[0], theirs]})
    assert reply.status == 201
    album = reply.json
    assert album["assetCount"] == 1 and album["albumThumbnailAssetId"] == mine[0]
    assert album["albumUsers"][0]["role"] == "owner"
    assert server.albums[album["id"]].asset_ids == [mine[0]]  # bob's asset silently left out

    assert [a["id"] for a in call(server, "GET", "/api/albums?name=2024-06-01", alice).json] \
        == [album["id"]]
    assert call(server, "GET", "/api/albums?name=2024-06", alice).json == []  # exact match
    assert call(server, "GET", "/api/albums?name=2024-06-01", bob).json == []  # per user

    results = call(server, "PUT", f"/api/albums/{album['id']}/assets", alice,
                   json_body={"ids": [mine[1], mine[0], theirs, str(uuid.uuid4())]}).json
    assert results == [
        {"id": mine[1], "success": True},
        {"id": mine[0], "success": False, "error": "duplicate"},
        {"id": theirs, "success": False, "error": "no_permission"},
        {"id": results[3]["id"], "success": False, "error": "no_permission"},
    ]
    assert call(server, "GET", f"/api/albums/{album['id']}", alice).json["assetCount"] == 2
    assert call(server, "GET", f"/api/albums/{album['id']}", bob).json == {
        "message": "Not found or no album.read access"}
    assert call(server, "PUT", f"/api/albums/{uuid.uuid4()}/assets", alice,
                json_body={"ids": [mine[2]]}).json == {"message": "Album not found"}
    assert call(server, "PUT", f"/api/albums/{album['id']}/assets", bob,
                json_body={"ids": [theirs]}).json == {
        "message": "Not found or no albumAsset.create access"}

    # Immich allows several albums with the same name: find-or-create must cope.
    call(server, "POST", "/api/albums", alice, json_body={"albumName": "2024-06-01"})
    assert len(call(server, "GET", "/api/albums?name=2024-06-01", alice).json) == 2
    assert len(server.albums_named("2024-06-01")) == 2


def test_external_libraries(fake_immich: FakeImmich) -> None:
    server = fake_immich
    admin = server.create_api_key("admin", admin=True)
    owner = server.users["admin"].id
    reply = call(server, "POST", "/api/libraries", admin,
                 json_body={"ownerId": owner, "name": "Photos", "importPaths": ["/srv/photos"]})
    assert reply.status == 201
    library = reply.json
    assert library["importPaths"] == ["/srv/photos"] and library["refreshedAt"] is None
    assert "**/@eaDir/**" in library["exclusionPatterns"]  # Immich's defaults
    assert call(server, "GET", "/api/libraries", admin).json == [library]

    reply = call(server, "POST", f"/api/libraries/{library['id']}/scan", admin)
    assert (reply.status, reply.body) == (204, b"")
    assert len(server.libraries[library["id"]].scans) == 1
    assert call(server, "GET", f"/api/libraries/{library['id']}", admin).json["refreshedAt"]
    reply = call(server, "PUT", f"/api/libraries/{library['id']}", admin,
                 json_body={"importPaths": ["/srv/photos", "/srv/more"]})
    assert reply.json["importPaths"] == ["/srv/photos", "/srv/more"]
    assert call(server, "POST", f"/api/libraries/{uuid.uuid4()}/scan", admin).json == {
        "message": "Library not found"}


# --- validation -----------------------------------------------------------------------------

def test_validation_catches_malformed_requests(fake_immich: FakeImmich) -> None:
    server = fake_immich
    alice = server.create_api_key("alice")

    reply = call(server, "POST", "/api/assets/bulk-upload-check", alice,
                 json_body={"assets": [{"id": 1}]})
    assert reply.status == 400 and reply.json["message"] == "Validation failed"
    assert {tuple(e["path"]) for e in reply.json["errors"]} == {("assets", "0", "id"),
                                                                ("assets", "0")}
    failures = server.take_validation_errors()
    assert [(f.direction, f.operation_id) for f in failures] == [("request", "checkBulkUpload")]
    assert any("'checksum' is a required property" in p for p in problems_of(failures))

    assert call(server, "GET", "/api/assets/not-a-uuid", alice).status == 400
    assert upload(server, alice, fields={"isFavorite": "maybe"}).status == 400
    body, ctype = multipart({"fileModifiedAt": CREATED}, {"assetData": ("a.jpg", JPEG)})
    assert call(server, "POST", "/api/assets", alice, data=body, content_type=ctype).status == 400
    assert call(server, "GET", "/api/no-such-endpoint", alice).status == 404
    problems = problems_of(server.take_validation_errors())
    assert "'not-a-uuid' is not a 'uuid' at path.id" in problems, problems
    assert any("'maybe' is not of type 'boolean'" in p for p in problems), problems
    assert any("'fileCreatedAt' is a required property" in p for p in problems), problems
    assert any("path not in the OpenAPI document" in p for p in problems), problems
    assert server.assets == {}

    # Fields Immich ignores are accepted but reported: here the v2-only deviceAssetId
    # (removed in 3.x) and an undeclared JSON property.  The CLI's fileSize is tolerated.
    assert upload(server, alice, fields={"deviceAssetId": "x", "fileSize": "1"}).status == 201
    assert call(server, "POST", "/api/albums", alice,
                json_body={"albumName": "x", "ownerId": "me"}).status == 201
    problems = problems_of(server.take_validation_errors())
    assert len(problems) == 2, problems
    assert "undeclared multipart field 'deviceAssetId'" in problems[0]
    assert "Additional properties are not allowed ('ownerId'" in problems[1]


def test_responses_are_validated_too() -> None:
    spec = get_spec()
    args = ("http://127.0.0.1:1", "POST", "/api/assets/bulk-upload-check", [],
            [("x-api-key", "k")], "application/json")
    good = json.dumps({"results": [{"id": "a", "action": "accept"}]}).encode()
    assert spec.validate_response(*args, 200, "application/json", [], good) == []
    bad = json.dumps({"results": [{"id": "a", "action": "skip"}]}).encode()
    assert "'skip' is not one of ['accept', 'reject']" in str(
        spec.validate_response(*args, 200, "application/json", [], bad))
    v2_error = json.dumps({"message": "x", "error": "Bad Request", "statusCode": 400}).encode()
    assert spec.validate_response(*args, 400, "application/json", [], v2_error)


# --- faults ----------------------------------------------------------------------------------

def test_fault_status_burst_and_rate_limit(fake_immich: FakeImmich) -> None:
    server = fake_immich
    alice = server.create_api_key("alice")
    check = {"assets": [{"id": "a", "checksum": sha1(b"a")}]}
    server.faults.add(r"^/api/assets/bulk-upload-check$", "status", count=2, status=502)
    statuses = [call(server, "POST", "/api/assets/bulk-upload-check", alice,
                     json_body=check).status for _ in range(3)]
    assert statuses == [502, 502, 200]

    server.faults.add(r"^/api/assets$", "rate_limit", method="POST", retry_after=7)
    reply = upload(server, alice)
    assert (reply.status, reply.headers["retry-after"]) == (429, "7")
    assert reply.json == {"message": "Too Many Requests"}
    assert upload(server, alice).status == 201

    server.faults.add(r"^/api/", "status", count=None, skip=1, status=503, retry_after=2)
    assert call(server, "GET", "/api/users/me", alice).status == 200
    assert [call(server, "GET", "/api/users/me", alice).status for _ in range(2)] == [503, 503]
    server.faults.clear()
    assert call(server, "GET", "/api/users/me", alice).status == 200
    assert [r.fault for r in server.requests].count("status") == 4


def test_fault_delay_and_service_time(fake_immich_factory: Callable[..., FakeImmich]) -> None:
    server = fake_immich_factory(service_time=0.2, upload_service_time=0.3)
    alice = server.create_api_key("alice")
    started = time.monotonic()
    call(server, "GET", "/api/users/me", alice)
    assert 0.2 <= time.monotonic() - started < 5
    started = time.monotonic()
    upload(server, alice)
    assert 0.5 <= time.monotonic() - started < 5
    server.service_time = server.upload_service_time = 0
    server.faults.add("/api/server/ping", "delay", seconds=0.4)
    started = time.monotonic()
    assert call(server, "GET", "/api/server/ping").status == 200
    assert 0.4 <= time.monotonic() - started < 5


async def _upload_aiohttp(server: FakeImmich, key: str, path: Path,
                          timeout: aiohttp.ClientTimeout | None = None) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("fileCreatedAt", CREATED)
    form.add_field("fileModifiedAt", CREATED)
    with open(path, "rb") as f:
        form.add_field("assetData", f, filename=path.name,
                       content_type="application/octet-stream")
        async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                server.api_url + "/assets", data=form, headers={"x-api-key": key}) as resp:
            return resp.status, await resp.json()


def test_fault_reset_mid_upload(fake_immich: FakeImmich, tmp_path: Path) -> None:
    server = fake_immich
    alice = server.create_api_key("alice")
    big = tmp_path / "IMG_0002.JPG"
    big.write_bytes(os.urandom(4 * 1024 * 1024))
    server.faults.add(r"^/api/assets$", "reset", method="POST", after_bytes=256 * 1024)
    with pytest.raises(aiohttp.ClientError):
        asyncio.run(_upload_aiohttp(server, alice, big))
    record = server.requests[-1]
    assert record.fault == "reset" and record.status is None
    assert record.body_bytes_read >= 256 * 1024
    assert server.assets == {}
    status, body = asyncio.run(_upload_aiohttp(server, alice, big))
    assert status == 201 and server.assets[body["id"]].checksum == sha1(big.read_bytes())
    assert not list((server.storage_dir / "incoming").iterdir())


def test_fault_slow_body_and_timeout(fake_immich: FakeImmich) -> None:
    server = fake_immich
    alice = server.create_api_key("alice")

    async def timed_get(path: str, timeout: aiohttp.ClientTimeout) -> tuple[float, float, Any]:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            started = time.monotonic()
            async with session.get(server.url + path, headers={"x-api-key": alice}) as resp:
                headers_at = time.monotonic() - started
                body = await resp.json()
                return headers_at, time.monotonic() - started, body

    server.faults.add("/api/server/version", "slow_body", chunk_size=10, interval=0.1)
    headers_at, done_at, body = asyncio.run(timed_get("/api/server/version",
                                                      aiohttp.ClientTimeout(total=10)))
    assert body["major"] == 3
    # Headers at once, then 56 bytes in 10-byte pieces 0.1 s apart.
    assert done_at - headers_at >= 0.45
    server.faults.add("/api/server/version", "slow_body", chunk_size=10, interval=1)
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(timed_get("/api/server/version", aiohttp.ClientTimeout(sock_read=0.3)))

    server.faults.add("/api/users/me", "timeout")
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(timed_get("/api/users/me", aiohttp.ClientTimeout(total=0.5)))
    assert time.monotonic() - started < 5
    assert asyncio.run(timed_get("/api/users/me", aiohttp.ClientTimeout(total=5)))[2][
        "name"] == "alice"

    # With seconds, the connection is closed after that long, without an answer.  (A POST:
    # aiohttp silently retries an idempotent request once when the server disconnects.)
    async def post_check() -> int:
        async with aiohttp.ClientSession() as session, session.post(
                server.api_url + "/assets/bulk-upload-check", json={"assets": []},
                headers={"x-api-key": alice}) as resp:
            return resp.status

    server.faults.add("/api/assets/bulk-upload-check", "timeout", seconds=0.2)
    started = time.monotonic()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        asyncio.run(post_check())
    assert 0.2 <= time.monotonic() - started < 5
    assert asyncio.run(post_check()) == 200


def test_uploads_stream_to_disk(fake_immich: FakeImmich, tmp_path: Path) -> None:
    """A 48 MB upload never sits in memory (client and server share this process)."""
    server = fake_immich
    alice = server.create_api_key("alice")
    big = tmp_path / "VID_0001.MP4"
    with open(big, "wb") as f:
        for _ in range(48):
            f.write(os.urandom(1024 * 1024))
    tracemalloc.start()
    try:
        status, body = asyncio.run(_upload_aiohttp(server, alice, big))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 201
    assert server.assets[body["id"]].size == 48 * 1024 * 1024
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


# --- fidelity check (2): the official CLI ---------------------------------------------------

#: What `immich upload --album` needs; `user.read` is for `immich login`.
CLI_PERMISSIONS = ["user.read", "asset.upload", "album.read", "album.create",
                   "albumAsset.create"]


@pytest.mark.slow
def test_official_cli_uploads_to_the_fake(fake_immich: FakeImmich, tmp_path: Path) -> None:
    from support.immich_cli import ensure_cli, immich_cli
    from support.samplecard import MediaSpec, build_card

    ensure_cli()  # installs @immich/cli@3.2.2 + Node 22 once per machine (about 6 s)
    server = fake_immich
    key = server.create_api_key("alice", CLI_PERMISSIONS)
    card = tmp_path / "card"
    taken = {"datetime_original": "2024:06:01 10:11:12", "offset": "+02:00",
             "make": "Canon", "model": "Canon EOS R6"}
    paths = build_card(card, [
        MediaSpec("DCIM/100CANON/IMG_0001.JPG", "jpeg", seed=1, **taken),
        MediaSpec("DCIM/100CANON/IMG_0002.JPG", "jpeg", seed=2, **taken),
        MediaSpec("DCIM/100CANON/IMG_0002.xmp", "xmp", seed=2, **taken),
        MediaSpec("DCIM/100CANON/IMG_0002.THM", "thm", seed=3, **taken),
        MediaSpec("DCIM/101CANON/MVI_0003.MP4", "mp4", seed=4, create_date="2024:06:01 08:12:00"),
        MediaSpec("DCIM/101CANON/IMG_0004.CR2", "cr2", seed=5, **taken),
        MediaSpec("MISC/notes.txt", "txt", seed=6),
    ])
    media = {p.name: p for p in paths if p.suffix in (".JPG", ".MP4", ".CR2")}
    config = tmp_path / "immich-config"

    login = immich_cli(["login", server.api_url, key], None, None, tmp_path, config_dir=config)
    assert login.returncode == 0, login.stdout + login.stderr
    assert "Logged in as alice@immich.test" in login.stdout
    assert (config / "auth.yml").exists()

    first = immich_cli(["upload", "--recursive", "--album", str(card)], None, None, tmp_path,
                       config_dir=config)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Found 4 new files and 0 duplicates" in first.stdout, first.stdout
    assert "Successfully uploaded 4 new assets" in first.stdout
    assert "Successfully created 2 new albums" in first.stdout

    assets = {a.filename: a for a in server.assets.values()}
    assert set(assets) == set(media)
    for name, path in media.items():
        assert assets[name].checksum == sha1(path.read_bytes()), name
        assert assets[name].owner == "alice" and assets[name].path.read_bytes() == \
            path.read_bytes()
        assert assets[name].fields["fileSize"] == str(path.stat().st_size)  # undeclared
    assert assets["IMG_0002.JPG"].has_sidecar and not assets["IMG_0001.JPG"].has_sidecar
    assert assets["MVI_0003.MP4"].type == "VIDEO"
    albums = {a.name: set(a.asset_ids) for a in server.albums.values()}
    assert albums == {
        "100CANON": {assets["IMG_0001.JPG"].id, assets["IMG_0002.JPG"].id},
        "101CANON": {assets["MVI_0003.MP4"].id, assets["IMG_0004.CR2"].id},
    }
    uploads = [r for r in server.requests if r.operation_id == "uploadAsset"]
    assert len(uploads) == 4 and not any("x-immich-checksum" in r.headers for r in uploads)

    # Second run, authenticated through the environment this time: all duplicates.
    before = len(server.requests)
    second = immich_cli(["upload", "--recursive", "--album", str(card)], server.url, key,
                        tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Found 0 new files and 4 duplicates" in second.stdout, second.stdout
    assert len(server.assets) == 4 and len(server.albums) == 2
    assert {a.name: set(a.asset_ids) for a in server.albums.values()} == albums
    second_run = server.requests[before:]
    assert second_run[0].path == "/.well-known/immich"
    assert not any(r.operation_id == "uploadAsset" for r in second_run)
