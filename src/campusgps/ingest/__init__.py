"""Folder of photos -> cleaned Dataset (``pipeline.ingest``); labels CSVs (``labels``); grouped split (``split``)."""
