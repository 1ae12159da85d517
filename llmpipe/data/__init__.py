"""Data curation stages: toy web, ingest, URL filter, extraction, quality, dedup, split."""
