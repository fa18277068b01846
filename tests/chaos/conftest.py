"""The chaos tier: a stack of processes on a nats-server, a Redis and a TCP proxy to TimescaleDB of
its own, each killed or cut off in turn while tasks run (``make chaos``; not in the default
``pytest`` run, which does not collect ``tests/chaos``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: fault injection against a stack of processes of the test's own (tests/chaos)"
    )
    config.addinivalue_line(
        "markers", "cluster: a 3-node NATS cluster losing its stream leader (opt-in: make test-cluster)"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from .audit import table
    from .test_chaos import RESULTS

    if RESULTS:
        terminalreporter.write_sep("=", "chaos figures")
        terminalreporter.write_line(table(RESULTS))
