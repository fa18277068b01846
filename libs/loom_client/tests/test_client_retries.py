"""The client's retries, through an httpx mock transport: bounded, with backoff, idempotent calls
only after a lost answer, every call after a refused connection or a 429/502/503/504, and across
several dispatcher URLs."""

from __future__ import annotations

import httpx
import pytest
from loom_client import AsyncLoomClient, ClientSettings, Conflict, LoomClient, Unavailable
from loom_client.calls import RetryPolicy, cancel, get_task, submit
from loom_protocol import Task

TASK = Task(task_id="t1", target_agent="echo").to_wire()
FAST = {"client_retries": 3, "client_retry_backoff_s": 0.0}


def settings(dispatchers: str = "http://d0", **extra: object) -> ClientSettings:
    return ClientSettings.model_validate({"dispatcher_url": dispatchers, **FAST, **extra})


class Script:
    """Answers the requests in turn: an exception is raised (no answer), a status is answered."""

    def __init__(self, *steps: int | Exception) -> None:
        self.steps = list(steps)
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        step = self.steps.pop(0) if self.steps else 202
        if isinstance(step, Exception):
            raise step
        return httpx.Response(step, json=TASK if step < 400 else {"error": {"code": "x", "message": "m"}})

    @property
    def hosts(self) -> list[str]:
        return [r.url.host for r in self.seen]


def test_a_submission_is_sent_again_with_its_task_id_after_a_lost_answer_and_a_503() -> None:
    script = Script(httpx.ReadError("reset"), 503, 202)
    with LoomClient(settings=settings(), transport=httpx.MockTransport(script)) as loom:
        task = loom.submit("echo", {"n": 1}, task_id="t1")
    assert task.task_id == "t1"
    assert len(script.seen) == 3
    assert {r.read() for r in script.seen} == {script.seen[0].read()}  # the same body, same task id


def test_retries_are_bounded_and_the_last_error_is_raised() -> None:
    script = Script(*(httpx.ConnectError("refused") for _ in range(10)))
    with LoomClient(settings=settings(), transport=httpx.MockTransport(script)) as loom:
        with pytest.raises(Unavailable):
            loom.get("t1")
    assert len(script.seen) == 4  # one try and three retries

    script = Script(*([503] * 10))
    with LoomClient(settings=settings(), transport=httpx.MockTransport(script)) as loom:
        with pytest.raises(Unavailable) as info:
            loom.get("t1")
    assert info.value.status == 503 and len(script.seen) == 4


def test_a_submission_refused_for_the_keys_rate_is_sent_again_and_a_lasting_429_is_unavailable() -> None:
    script = Script(429, 202)
    with LoomClient(settings=settings(), transport=httpx.MockTransport(script)) as loom:
        assert loom.submit("echo", {"n": 1}, task_id="t1").task_id == "t1"
    assert len(script.seen) == 2
    script = Script(*([429] * 10))
    with LoomClient(settings=settings(), transport=httpx.MockTransport(script)) as loom:
        with pytest.raises(Unavailable) as info:
            loom.submit("echo", {"n": 1}, task_id="t1")
    assert info.value.status == 429 and len(script.seen) == 4


def test_a_500_is_retried_for_an_idempotent_call_only() -> None:
    script = Script(500, 202)
    with LoomClient(settings=settings(), transport=httpx.MockTransport(script)) as loom:
        assert loom.submit("echo", {}, task_id="t1").task_id == "t1"
    assert len(script.seen) == 2
    script = Script(500, 202)
    with LoomClient(settings=settings(), transport=httpx.MockTransport(script)) as loom:
        with pytest.raises(Unavailable):
            loom.cancel("t1")
    assert len(script.seen) == 1


def test_no_retry_when_retries_are_off_or_the_answer_is_an_error_of_the_call() -> None:
    script = Script(503)
    with LoomClient(settings=settings(client_retries=0), transport=httpx.MockTransport(script)) as loom:
        with pytest.raises(Unavailable):
            loom.get("t1")
    assert len(script.seen) == 1
    script = Script(409)
    with LoomClient(settings=settings(), transport=httpx.MockTransport(script)) as loom:
        with pytest.raises(Conflict):
            loom.cancel("t1")
    assert len(script.seen) == 1


def test_a_call_that_is_not_idempotent_is_not_sent_again_after_a_lost_answer() -> None:
    script = Script(httpx.ReadError("reset"), 202)
    with LoomClient(settings=settings(), transport=httpx.MockTransport(script)) as loom:
        with pytest.raises(Unavailable):
            loom.cancel("t1")
    assert len(script.seen) == 1
    script = Script(httpx.ConnectError("refused"), 202)  # never reached the service: safe
    with LoomClient(settings=settings(), transport=httpx.MockTransport(script)) as loom:
        assert loom.cancel("t1").task_id == "t1"
    assert len(script.seen) == 2


def test_several_dispatchers_are_tried_in_turn_and_the_one_that_answers_is_kept() -> None:
    script = Script(httpx.ConnectError("refused"), 503, 202, 202)
    with LoomClient(
        settings=settings("http://d0, http://d1,http://d2/"), transport=httpx.MockTransport(script)
    ) as loom:
        loom.get("t1")
        loom.get("t1")
    assert script.hosts == ["d0", "d1", "d2", "d2"]


async def test_the_async_client_retries_the_same_way() -> None:
    script = Script(httpx.ConnectError("refused"), 503, httpx.ReadTimeout("slow"), 202)
    async with AsyncLoomClient(
        settings=settings("http://d0,http://d1"), transport=httpx.MockTransport(script)
    ) as loom:
        task = await loom.submit("echo", {}, task_id="t1")
    assert task.task_id == "t1"
    assert script.hosts == ["d0", "d1", "d0", "d1"]


def test_the_policy_backs_off_doubling_up_to_its_bound_and_knows_idempotent_calls() -> None:
    policy = RetryPolicy(retries=5, backoff_s=0.1, max_backoff_s=0.5)
    assert [policy.delay(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert get_task("t").repeatable and submit({"taskId": "t"}).repeatable
    assert not submit({}).repeatable and not cancel("t").repeatable
    lost = httpx.ReadError("reset")
    assert policy.after_error(get_task("t"), lost) and not policy.after_error(cancel("t"), lost)
    assert policy.after_error(cancel("t"), httpx.ConnectError("refused"))


def test_dispatcher_urls_come_from_a_comma_separated_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_DISPATCHER_URL", "http://a:1/, http://b:2")
    monkeypatch.setenv("LOOM_CLIENT_RETRIES", "7")
    s = ClientSettings()
    assert s.dispatcher_urls == ["http://a:1", "http://b:2"] and s.client_retries == 7
