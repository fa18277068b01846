"""Loom Studio: the debugger's web UI, static files served by the query service at ``/``, with the
proxy (``/studio-api/...``) that lets the browser reach the dispatcher and the replay service
through the query origin, and the export of a task's events as JSON lines."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
"""index.html, the shell's modules, one module per view and the vendored libraries."""
