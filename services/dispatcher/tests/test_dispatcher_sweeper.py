"""The sweep loop stops on its event, even when a sweep swallowed the cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from loom_dispatcher.dispatching import Dispatcher, sweep_forever

WaitFor = Callable[..., Awaitable[None]]  # the wait_for fixture (services/conftest.py)


class SwallowingDispatcher:
    """A sweep that eats a CancelledError, as a library racing ``asyncio.wait_for`` can."""

    def __init__(self) -> None:
        self.sweeps = 0
        self.started = asyncio.Event()

    async def sweep(self) -> int:
        self.sweeps += 1
        self.started.set()
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass
        return 0


async def test_a_stop_event_ends_the_loop_that_cancellation_alone_would_not(wait_for: WaitFor) -> None:
    fake = SwallowingDispatcher()
    stop = asyncio.Event()
    loop = asyncio.create_task(sweep_forever(cast(Dispatcher, fake), 0.01, lambda: None, stop))
    await asyncio.wait_for(fake.started.wait(), 5)
    loop.cancel()  # lands inside the sweep and is swallowed: the loop goes on
    at_cancel = fake.sweeps
    await wait_for(lambda: fake.sweeps >= at_cancel + 2, 5.0)
    assert not loop.done()
    stop.set()
    done, _ = await asyncio.wait({loop}, timeout=5)
    assert done == {loop}
    assert cast(Any, loop).exception() is None
