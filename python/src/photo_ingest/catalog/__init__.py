"""The PostgreSQL catalog: connections, migrations and queries shared by every stage."""

from photo_ingest.catalog.db import CatalogError, connect

__all__ = ["CatalogError", "connect"]
