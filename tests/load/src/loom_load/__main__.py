"""``python -m loom_load``."""

from loom_load.cli import app

if __name__ == "__main__":  # not when a client process (multiprocessing, spawn) imports it
    app(prog_name="python -m loom_load")
