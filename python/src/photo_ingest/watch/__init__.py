"""Watch folders: ingest what lands in them once it is complete, then leave, archive or
delete the source, per folder (`photo-ingest watch`, photo-ingest-watch.service)."""
