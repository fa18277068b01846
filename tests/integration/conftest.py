"""The process tier takes its fixtures from ``tests/conftest.py``: one nats-server for the
session (an account per test), the machine's Redis under a per-test key prefix, and Loom
services as processes on free ports (``process=True``), stopped in ``finally``."""
