"""Positions: decode device formats, run the pipeline, store in bulk."""
