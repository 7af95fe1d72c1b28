"""The message at the end of a card (or folder) session: what a person at the reader needs.

Card label, counts, bytes, duration, the failures with their reasons, what each mirror
holds, and - first and plainly - whether the card is safe to format, and why (not).
"""

from __future__ import annotations

from typing import Any

from photo_ingest.notify.message import Message
from photo_ingest.report import human_bytes

MAX_FAILURES = 10
_EVENTS = {"completed": "success", "partial": "partial", "failed": "failure",
           "interrupted": "failure"}


def session_message(summary: dict[str, Any], card: dict[str, Any] | None = None
                    ) -> Message:
    """SUMMARY: the ingest's JSON summary with the mirror additions (mirror.session)."""
    status, files, size = summary["status"], summary["files"], summary["bytes"]
    safe = bool(summary.get("safe_to_format"))
    event = _EVENTS.get(status, "failure")
    if event == "success" and not safe:
        event = "partial"  # every file is in the library, but a required mirror lags
    label = _label(card, summary["source"])
    verdict = "safe to format" if safe else "NOT safe to format"
    title = f"photo-ingest: {label} {status} - {verdict}"
    lines = [
        f"Safe to format: {'yes' if safe else 'no'} - {summary.get('safe_reason') or status}",
        f"Card {label}: {status} in {_duration(summary['duration_seconds'])}",
        *_outcome_lines(summary),
    ]
    for m in summary.get("mirrors", []):
        lines.append(f"Mirror {_mirror_line(m)}")
    return Message(
        event=event, title=title, body="\n".join(lines), **_urgency(event),
        data={"status": status, "session": summary["session"], "card": label,
              "source": summary["source"], "safe_to_format": safe,
              "safe_reason": summary.get("safe_reason"), "files": files, "bytes": size,
              "duration_seconds": summary["duration_seconds"], "error": summary.get("error"),
              "failures": _failures(summary)[:MAX_FAILURES],
              "mirrors": summary.get("mirrors", [])})


_AFTER = {"leave": "left in place", "archive": "moved to the archive folder once verified",
          "delete": "deleted once verified"}


def folder_message(summary: dict[str, Any], watch: str, after: str) -> Message:
    """The end of a watch folder's session: no card to format, but the same counts, and what
    happens to the folder's files."""
    status = summary["status"]
    event = _EVENTS.get(status, "failure")
    lines = [f"Watch folder {watch}: session {summary['session']} {status} in "
             f"{_duration(summary['duration_seconds'])}",
             *_outcome_lines(summary),
             f"Source files: {_AFTER.get(after, after)}"]
    return Message(
        event=event, title=f"photo-ingest: watch folder {watch} {status}",
        body="\n".join(lines), **_urgency(event),
        data={"status": status, "session": summary["session"], "watch": watch,
              "source": summary["source"], "after": after, "files": summary["files"],
              "bytes": summary["bytes"], "duration_seconds": summary["duration_seconds"],
              "error": summary.get("error"), "failures": _failures(summary)[:MAX_FAILURES]})


def _urgency(event: str) -> dict[str, Any]:
    return {"priority": {"success": 3, "partial": 4}.get(event, 5),
            "tags": {"success": ("white_check_mark",), "partial": ("warning",)}
            .get(event, ("rotating_light",))}


def _outcome_lines(summary: dict[str, Any]) -> list[str]:
    files, size = summary["files"], summary["bytes"]
    lines = [f"Files: {files['copied']} copied, {files['duplicate']} already in the library, "
             f"{files['skipped']} skipped, {files['failed']} failed",
             f"Bytes: {human_bytes(size['copied'])} copied of {human_bytes(size['total'])}"]
    if summary.get("error"):
        lines.append(f"Error: {summary['error']}")
    failures = _failures(summary)
    if failures:
        lines.append("Failed:")
        lines += [f"  {o['path']}: {o['reason']}" for o in failures[:MAX_FAILURES]]
        if len(failures) > MAX_FAILURES:
            lines.append(f"  ... and {len(failures) - MAX_FAILURES} more "
                         f"(photo-ingest sessions {summary['session']} --failed)")
    return lines


def _failures(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"path": o["path"], "reason": o["reason"]}
            for o in summary.get("outcomes", []) if o["outcome"] == "failed"]


def _label(card: dict[str, Any] | None, source: str) -> str:
    card = card or {}
    return str(card.get("label") or card.get("uuid") or card.get("device") or source)


def _mirror_line(m: dict[str, Any]) -> str:
    kind = "required" if m["required"] else "best effort"
    done = f"{m['copied']} copied, {m['adopted']} already there, {m['failed']} failed"
    if m["complete"]:
        state = "holds every file"
    else:
        lacking = sum((m.get("missing") or {}).values())
        state = f"lacks {lacking} file(s)" if lacking else "not updated"
    reason = f" ({m['reason']})" if m.get("reason") else ""
    return f"{m['name']} ({kind}): {state}; {done}{reason}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
