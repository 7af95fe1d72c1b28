"""The metadata stage: every asset gets a typed, queryable metadata record.

One job per module:

* extractor   exiftool in persistent batch mode (pyexiftool), many files per call
* normalise   DuckDB: exiftool's JSON -> typed columns (the SQL is normalise.sql)
* load        PostgreSQL: COPY into staging tables, one upsert, one transaction per batch
* backlog     which assets need work; claims with FOR NO KEY UPDATE SKIP LOCKED
* run         `photo-ingest extract`: workers, pipelining, the summary
* export      `photo-ingest export`: the table as Parquet or CSV through DuckDB

The table is asset_metadata (catalog migration 0002); docs/metadata.md describes it.
"""
