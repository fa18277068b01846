"""The garbage collector's settings for a service (loom_protocol.collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from loom_protocol.collector import tune_collector
from loom_protocol.settings import ServiceSettings


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_start_up_objects_are_frozen_and_the_young_generation_is_larger(restored: None) -> None:
    _, middle, old = gc.get_threshold()
    tune_collector(ServiceSettings().gc_threshold)
    assert gc.get_threshold() == (20_000, middle, old)
    assert gc.get_freeze_count() > 1000  # the modules, classes and schemas imported so far


def test_zero_leaves_the_interpreter_as_it_is(restored: None) -> None:
    before = gc.get_threshold()
    tune_collector(0)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
