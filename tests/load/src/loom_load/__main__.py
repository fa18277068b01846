"""``python -m loom_load``."""

from loom_load.cli import app

app(prog_name="python -m loom_load")
