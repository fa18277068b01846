"""Loom's Python client SDK and the `loom` command line."""
