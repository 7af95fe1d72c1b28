"""photo-ingest: a headless photo ingest server."""

__version__ = "0.1.0"
