"""The asynchronous client: :class:`AsyncLoomClient`, the same calls as
:class:`~loom_client.LoomClient` on ``httpx.AsyncClient`` (and nats-py, WebSockets) for asyncio.

Use it when submitting or following many tasks at once::

    async with AsyncLoomClient() as loom:
        tasks = await asyncio.gather(*(loom.submit("echo", {"n": n}, wait=10) for n in range(100)))
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx
from httpx_sse import aconnect_sse
from loom_protocol import ApiKeyRecord, CreatedApiKey, Scope, Task, TaskSubmission

from . import calls
from .calls import Call, Service
from .client import MAX_TRACE_TASKS, NOT_STORED_POLL_S, RETRY_PAUSE_S, resolve_settings
from .errors import NotFound, Timeout, Unavailable, error_from_response, unavailable
from .live import AsyncLiveFeed, Filter, live_filters, live_url
from .models import (
    AgentInfo,
    ReplayFrame,
    ReplaySession,
    SessionDetail,
    StreamEnd,
    TaskDetail,
    TaskPage,
    TaskSummary,
)
from .nats_submit import TaskPublisher
from .settings import ClientSettings
from .streaming import PING_S, StreamItem, read_event, stream_params
from .trace import TraceNode, build_node

__all__ = ["AsyncLoomClient"]

T = TypeVar("T")


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


class AsyncLoomClient:
    """Loom's asynchronous client; every method of :class:`~loom_client.LoomClient`, awaitable.

    Args:
        dispatcher_url: The dispatcher; default ``LOOM_DISPATCHER_URL`` (http://127.0.0.1:8001).
        query_url: The query service; default ``LOOM_QUERY_URL`` (http://127.0.0.1:8004).
        registry_url: The registry; default ``LOOM_REGISTRY_URL`` (http://127.0.0.1:8002).
        replay_url: The replay service; default ``LOOM_REPLAY_URL`` (http://127.0.0.1:8005).
        nats_url: NATS, for ``submit(..., via="nats")``; default ``LOOM_NATS_URL``.
        api_key: Sent as ``Authorization: Bearer``; default ``LOOM_API_KEY``.
        timeout: Seconds one call may take; default ``LOOM_CLIENT_TIMEOUT_S`` (10).
        settings: Settings to start from instead of the environment.
        transport: An httpx transport (tests, proxies).
        max_connections: HTTP connections kept open at once.
    """

    def __init__(
        self,
        dispatcher_url: str | None = None,
        *,
        query_url: str | None = None,
        registry_url: str | None = None,
        replay_url: str | None = None,
        nats_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        settings: ClientSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        self.settings = resolve_settings(
            settings,
            dispatcher_url=dispatcher_url,
            query_url=query_url,
            registry_url=registry_url,
            replay_url=replay_url,
            nats_url=nats_url,
            api_key=api_key,
            client_timeout_s=timeout,
        )
        self.timeout = self.settings.client_timeout_s
        self._retry = calls.RetryPolicy(
            self.settings.client_retries,
            self.settings.client_retry_backoff_s,
            self.settings.client_retry_max_backoff_s,
        )
        self._dispatcher = 0  # index of the dispatcher replica in use
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(
            headers=self.settings.headers(), timeout=self.timeout, transport=transport, limits=limits
        )
        self._publisher: TaskPublisher | None = None

    # -- plumbing -------------------------------------------------------------------------------

    def _base(self, service: Service) -> str:
        """The service's URL: for the dispatcher, the replica that answered last."""
        if service == "dispatcher":
            urls = self.settings.dispatcher_urls
            return urls[self._dispatcher % len(urls)]
        urls_of = {
            "query": self.settings.query_url,
            "registry": self.settings.registry_url,
            "replay": self.settings.replay_url,
        }
        return urls_of[service].rstrip("/")

    def _next_base(self, service: Service) -> None:
        """After a failed try: the next dispatcher replica, if several."""
        if service == "dispatcher":
            self._dispatcher += 1

    async def _send(self, call: Call[T]) -> T:
        """Send ``call``; sent again (bounded, with backoff, to the next dispatcher replica if
        several) while it gets no answer or an answer that says so, as :class:`~loom_client.calls.RetryPolicy`
        allows."""
        retry = 0
        while True:
            url = self._base(call.service) + call.path
            try:
                response = await self._http.request(
                    call.method,
                    url,
                    params=call.query(),
                    json=call.json,
                    timeout=self.timeout + call.extra_s,
                )
            except httpx.TransportError as exc:
                if retry >= self._retry.retries or not self._retry.after_error(call, exc):
                    raise unavailable(exc, url) from exc
            else:
                if retry >= self._retry.retries or not self._retry.after_answer(call, response):
                    return calls.finish(call, response)
            retry += 1
            self._next_base(call.service)
            await asyncio.sleep(self._retry.delay(retry))

    async def aclose(self) -> None:
        """Close the HTTP connections and the NATS connection, if any (safe to call twice)."""
        await self._http.aclose()
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- tasks ----------------------------------------------------------------------------------

    async def submit(
        self,
        agent: str | TaskSubmission,
        parameters: Mapping[str, Any] | None = None,
        *,
        action: str | None = None,
        task_id: str | None = None,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        parent_task_id: str | None = None,
        source_agent: str | None = None,
        wait: float | None = None,
        wait_for_agent: bool = False,
        via: Literal["rest", "nats"] = "rest",
    ) -> Task:
        """Submit a task (see :meth:`LoomClient.submit`)."""
        body = calls.submission_body(
            agent,
            parameters,
            action=action,
            task_id=task_id,
            session_id=session_id,
            metadata=metadata,
            parent_task_id=parent_task_id,
            source_agent=source_agent,
        )
        deadline = time.monotonic() + (wait or 0.0)
        if via == "nats":
            task = await self._publish(body, wait_for_agent)
            if not wait:
                return task
            task = await self._await_stored(task, deadline)
        else:
            task = await self._send(calls.submit(body, wait_s=wait or 0.0, wait_for_agent=wait_for_agent))
        if wait and not task.is_terminal and _left(deadline) > 0:
            try:
                return await self.wait(task.task_id, timeout=_left(deadline))
            except Timeout as exc:
                return exc.task or task
        return task

    async def _publish(self, body: dict[str, Any], wait_for_agent: bool) -> Task:
        if wait_for_agent:
            body = {**body, "metadata": {**body.get("metadata", {}), "waitForAgent": True}}
        task = Task.model_validate(body)
        if self._publisher is None:
            self._publisher = TaskPublisher(self.settings.nats_connection(), self.timeout)
        await self._publisher.publish(task)
        return task

    async def _await_stored(self, task: Task, deadline: float) -> Task:
        while True:
            try:
                return await self.get(task.task_id)
            except NotFound:
                if _left(deadline) <= 0:
                    return task
            await asyncio.sleep(min(NOT_STORED_POLL_S, _left(deadline)))

    async def get(self, task_id: str) -> Task:
        """The task as the dispatcher has it now (see :meth:`LoomClient.get`)."""
        return await self._send(calls.get_task(task_id))

    async def wait(self, task_id: str, timeout: float = 60.0) -> Task:  # noqa: ASYNC109 (as LoomClient)
        """Wait until the task ends (see :meth:`LoomClient.wait`).

        Raises:
            Timeout: It had not ended after ``timeout`` s (``task``: as it was then).
            NotFound: No task has this id.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        task = await self.get(task_id)
        while not task.is_terminal:
            left = _left(deadline)
            if left <= 0:
                raise Timeout(f"task {task_id!r} still {task.status.value} after {timeout:g} s", task=task)
            ended = False
            try:
                async for item in self.stream(task_id, timeout=left):
                    ended = isinstance(item, StreamEnd)
                    if ended or _left(deadline) <= 0:
                        break
            except (Timeout, Unavailable):
                pass
            task = await self.get(task_id)
            if not ended and not task.is_terminal and _left(deadline) > 0:
                await asyncio.sleep(min(RETRY_PAUSE_S, _left(deadline)))
        return task

    async def stream(
        self,
        task_id: str,
        *,
        timeout: float = 60.0,  # noqa: ASYNC109 (the same signature as LoomClient.stream)
    ) -> AsyncIterator[StreamItem]:
        """The task's answer as it is produced, then its end (see :meth:`LoomClient.stream`)."""
        url = self._base("dispatcher") + calls.stream_path(task_id)
        read_s = min(timeout, PING_S) + self.timeout
        try:
            async with aconnect_sse(
                self._http,
                "GET",
                url,
                params=stream_params(timeout),
                timeout=httpx.Timeout(self.timeout, read=read_s),
            ) as source:
                if source.response.status_code >= 400:
                    await source.response.aread()
                    raise error_from_response(source.response)
                async for sse in source.aiter_sse():
                    item = read_event(sse, task_id)
                    if item is not None:
                        yield item
        except httpx.TransportError as exc:
            raise unavailable(exc, url) from exc

    async def cancel(self, task_id: str) -> Task:
        """Cancel the task and its unfinished children (see :meth:`LoomClient.cancel`)."""
        return await self._send(calls.cancel(task_id))

    async def approve(
        self,
        task_id: str,
        *,
        arguments: Mapping[str, Any] | None = None,
        by: str | None = None,
        reason: str | None = None,
    ) -> Task:
        """Approve the tool call the task waits on (see :meth:`LoomClient.approve`)."""
        return await self._send(calls.approve(task_id, arguments, by, reason))

    async def reject(self, task_id: str, *, by: str | None = None, reason: str | None = None) -> Task:
        """Reject the tool call the task waits on (see :meth:`LoomClient.reject`)."""
        return await self._send(calls.reject(task_id, by, reason))

    # -- stored tasks, sessions, traces (query service) ------------------------------------------

    async def tasks(
        self,
        *,
        status: str | Sequence[str] | None = None,
        agent: str | None = None,
        session: str | None = None,
        parent: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        text: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of the stored tasks, newest first (see :meth:`LoomClient.tasks`)."""
        return await self._send(
            calls.list_tasks(
                status=status,
                agent=agent,
                session=session,
                parent=parent,
                since=since,
                until=until,
                text=text,
                limit=limit,
                cursor=cursor,
            )
        )

    async def iter_pages(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[TaskPage]:
        """The pages of the search under ``filters``, until the last (see :meth:`LoomClient.iter_pages`)."""
        cursor: str | None = None
        while True:
            page = await self.tasks(limit=page_size, cursor=cursor, **filters)
            yield page
            cursor = page.next_cursor
            if cursor is None or not page.tasks:
                return

    async def iter_tasks(
        self, *, page_size: int = 100, max_tasks: int | None = None, **filters: Any
    ) -> AsyncIterator[TaskSummary]:
        """Every stored task under ``filters``, page after page (see :meth:`LoomClient.iter_tasks`)."""
        seen = 0
        async for page in self.iter_pages(page_size=page_size, **filters):
            for summary in page.tasks:
                if max_tasks is not None and seen >= max_tasks:
                    return
                seen += 1
                yield summary

    async def session(self, session_id: str) -> SessionDetail:
        """A session's tasks and totals (see :meth:`LoomClient.session`)."""
        return await self._send(calls.session(session_id))

    async def task_detail(self, task_id: str) -> TaskDetail:
        """The stored task, its events and children (see :meth:`LoomClient.task_detail`)."""
        return await self._send(calls.task_detail(task_id))

    async def trace(self, task_id: str, *, max_tasks: int = MAX_TRACE_TASKS) -> TraceNode:
        """The task and its descendants as a tree of steps (see :meth:`LoomClient.trace`)."""
        budget = [max_tasks - 1]

        async def node(detail: TaskDetail) -> TraceNode:
            children: list[TraceNode] = []
            for child in detail.children:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
                try:
                    children.append(await node(await self.task_detail(child.task_id)))
                except NotFound:
                    children.append(TraceNode(task_id=child.task_id, task=child))
            return build_node(detail, children)

        return await node(await self.task_detail(task_id))

    def live(
        self,
        *,
        task_id: Filter = None,
        event_type: Filter = None,
        agent: Filter = None,
        trace_id: Filter = None,
        session_id: Filter = None,
    ) -> AsyncLiveFeed:
        """The live feed of events, filtered: ``async with loom.live(...) as feed`` (see
        :meth:`LoomClient.live`)."""
        filters = live_filters(
            task_id=task_id, event_type=event_type, agent=agent, trace_id=trace_id, session_id=session_id
        )
        return AsyncLiveFeed(
            live_url(self.settings.query_url), filters, self.settings.headers(), self.timeout
        )

    # -- agents (registry) -----------------------------------------------------------------------

    async def agents(self) -> list[AgentInfo]:
        """Every agent with a live instance (see :meth:`LoomClient.agents`)."""
        return await self._send(calls.agents())

    # -- API keys (dispatcher, admin scope) ------------------------------------------------------

    async def create_key(self, name: str, scopes: Iterable[Scope | str]) -> CreatedApiKey:
        """Create an API key; the answer holds the key, shown only this once (see
        :meth:`LoomClient.create_key`)."""
        return await self._send(calls.create_key(name, scopes))

    async def list_keys(self) -> list[ApiKeyRecord]:
        """The stored API keys' records, by name (see :meth:`LoomClient.list_keys`)."""
        return await self._send(calls.list_keys())

    async def revoke_key(self, key_id: str) -> None:
        """Revoke the stored key with this ``id`` (see :meth:`LoomClient.revoke_key`)."""
        await self._send(calls.revoke_key(key_id))

    # -- replay ----------------------------------------------------------------------------------

    async def create_replay(
        self,
        *,
        task_id: str | None = None,
        trace_id: str | None = None,
        session_id: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> ReplaySession:
        """A replay session over recorded events (see :meth:`LoomClient.create_replay`)."""
        return await self._send(
            calls.create_replay(
                task_id=task_id,
                trace_id=trace_id,
                session_id=session_id,
                start_time=start_time,
                end_time=end_time,
            )
        )

    async def replay_session(self, session_id: str) -> ReplaySession:
        """The replay session and its cursor."""
        return await self._send(calls.get_replay(session_id))

    async def replay_step(
        self,
        session_id: str,
        direction: Literal["forward", "backward"] = "forward",
        *,
        state: calls.ReplayState = "none",
    ) -> ReplayFrame:
        """Move the replay cursor one event (see :meth:`LoomClient.replay_step`)."""
        return await self._send(calls.step_replay(session_id, direction, state))

    async def replay_jump(
        self, session_id: str, index: int, *, state: calls.ReplayState = "none"
    ) -> ReplayFrame:
        """Move the replay cursor to event ``index`` (see :meth:`LoomClient.replay_jump`)."""
        return await self._send(calls.jump_replay(session_id, index, state))

    async def delete_replay(self, session_id: str) -> None:
        """End a replay session."""
        await self._send(calls.delete_replay(session_id))
