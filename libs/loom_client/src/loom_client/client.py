"""The blocking client: :class:`LoomClient`.

Every method is one call to one service (see :mod:`loom_client.calls`), bounded by the client's
timeout (a wait adds its own duration), and returns ``loom_protocol`` models or those of
:mod:`loom_client.models`; failures raise the errors of :mod:`loom_client.errors`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx
from httpx_sse import connect_sse
from loom_protocol import ApiKeyRecord, CreatedApiKey, Scope, Task, TaskSubmission

from . import calls
from .calls import Call, Service
from .errors import LoomError, NotFound, Timeout, Unavailable, error_from_response, unavailable
from .live import Filter, LiveFeed, live_filters, live_url
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
from .nats_submit import BackgroundLoop, TaskPublisher
from .settings import ClientSettings
from .streaming import PING_S, StreamItem, read_event, stream_params
from .trace import TraceNode, build_node

__all__ = ["LoomClient", "resolve_settings"]

T = TypeVar("T")

RETRY_PAUSE_S = 0.2
"""How long a wait pauses before it reads again after a stream that ended early."""

NOT_STORED_POLL_S = 0.05
"""How often a NATS submission with a wait looks for the task the dispatcher stores."""

MAX_TRACE_TASKS = 200
"""The most tasks :meth:`LoomClient.trace` fetches for one tree."""


def resolve_settings(settings: ClientSettings | None, **overrides: Any) -> ClientSettings:
    """The client's settings: ``settings`` (else read from ``LOOM_*`` / ``.env``), with the
    given non-None ``overrides`` (by field name) applied."""
    given = {name: value for name, value in overrides.items() if value is not None}
    if settings is None:
        return ClientSettings(**given)
    return ClientSettings.model_validate({**settings.model_dump(), **given})


def _deadline(timeout: float) -> float:
    return time.monotonic() + max(0.0, timeout)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


class LoomClient:
    """Loom's blocking client: submit and follow tasks, search them, watch the live feed,
    list agents and step through replays.

    Use it as a context manager (or call :meth:`close`)::

        with LoomClient() as loom:
            task = loom.submit("calculator", {"prompt": "what is 6*7?"}, wait=10)
            print(task.status, task.result)

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
        transport: httpx.BaseTransport | None = None,
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
        self._http = httpx.Client(headers=self.settings.headers(), timeout=self.timeout, transport=transport)
        self._loop: BackgroundLoop | None = None
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

    def _send(self, call: Call[T]) -> T:
        """Send ``call``; sent again (bounded, with backoff, to the next dispatcher replica if
        several) while it gets no answer or an answer that says so, as :class:`~loom_client.calls.RetryPolicy`
        allows."""
        retry = 0
        while True:
            url = self._base(call.service) + call.path
            try:
                response = self._http.request(
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
            time.sleep(self._retry.delay(retry))

    def close(self) -> None:
        """Close the HTTP connections and the NATS connection, if any (safe to call twice)."""
        self._http.close()
        loop, self._loop = self._loop, None
        publisher, self._publisher = self._publisher, None
        if loop is not None:
            if publisher is not None:
                try:
                    loop.run(publisher.close(), self.timeout)
                except LoomError:
                    pass
            loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- tasks ----------------------------------------------------------------------------------

    def submit(
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
        """Submit a task.

        The task gets an id of the client's own unless ``task_id`` is given, so submitting the
        same body again is the same task (the dispatcher answers the stored one).

        Args:
            agent: The agent to run it, or a whole :class:`~loom_protocol.TaskSubmission`.
            parameters: Its input, e.g. ``{"prompt": "what is 6*7?"}``.
            action: ``execute`` (default) or ``stream`` (see :meth:`stream`).
            task_id: Its id (idempotency key); new when not given.
            session_id: The session it belongs to (agents share memory within one).
            metadata: Task metadata (``approvalTools``, ``timeoutS``, ...).
            parent_task_id: The delegating task, if any.
            source_agent: Who submits it.
            wait: Seconds to wait for the task to end before returning; it is returned as it
                is then, ended or not (no :class:`Timeout`).
            wait_for_agent: Accept it even if no instance of ``agent`` was ever seen (it
                waits for one) instead of a 404 ``unknown_agent``.
            via: ``rest`` (the dispatcher's API) or ``nats`` (published on JetStream).

        Returns:
            The task as the dispatcher has it: ``pending`` / ``dispatched`` / ``running``, or
            ended after ``wait``. Over NATS without ``wait``: the task as published.

        Raises:
            NotFound: ``unknown_agent`` (see ``suggestions``).
            Conflict: ``task_id_conflict``: the id is taken by a different body.
            InvalidRequest: The dispatcher refused the body (``fields``).
            Unavailable: The dispatcher (or NATS) did not answer.
        """
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
        deadline = _deadline(wait or 0.0)
        if via == "nats":
            task = self._publish(body, wait_for_agent)
            if not wait:
                return task
            task = self._await_stored(task, deadline)
        else:
            task = self._send(calls.submit(body, wait_s=wait or 0.0, wait_for_agent=wait_for_agent))
        if wait and not task.is_terminal and _left(deadline) > 0:
            try:
                return self.wait(task.task_id, timeout=_left(deadline))
            except Timeout as exc:
                return exc.task or task
        return task

    def _publish(self, body: dict[str, Any], wait_for_agent: bool) -> Task:
        if wait_for_agent:
            body = {**body, "metadata": {**body.get("metadata", {}), "waitForAgent": True}}
        task = Task.model_validate(body)
        if self._loop is None or self._publisher is None:
            self._loop = BackgroundLoop()
            self._publisher = TaskPublisher(self.settings.nats_connection(), self.timeout)
        self._loop.run(self._publisher.publish(task), self.timeout * 2)
        return task

    def _await_stored(self, task: Task, deadline: float) -> Task:
        """The task the dispatcher stored for a NATS submission; ``task`` if not stored by ``deadline``."""
        while True:
            try:
                return self.get(task.task_id)
            except NotFound:
                if _left(deadline) <= 0:
                    return task
            time.sleep(min(NOT_STORED_POLL_S, _left(deadline)))

    def get(self, task_id: str) -> Task:
        """The task as the dispatcher has it now.

        Raises:
            NotFound: No task has this id.
        """
        return self._send(calls.get_task(task_id))

    def wait(self, task_id: str, timeout: float = 60.0) -> Task:
        """Wait until the task ends (completed, failed, cancelled or dead).

        It follows the task's stream on the dispatcher, so it returns as soon as the task ends.

        Args:
            task_id: The task.
            timeout: The longest wait, in seconds.

        Returns:
            The ended task.

        Raises:
            Timeout: It had not ended after ``timeout`` s (``task``: as it was then).
            NotFound: No task has this id.
        """
        deadline = _deadline(timeout)
        task = self.get(task_id)
        while not task.is_terminal:
            left = _left(deadline)
            if left <= 0:
                raise Timeout(f"task {task_id!r} still {task.status.value} after {timeout:g} s", task=task)
            ended = False
            try:
                for item in self.stream(task_id, timeout=left):
                    ended = isinstance(item, StreamEnd)
                    if ended or _left(deadline) <= 0:
                        break
            except (Timeout, Unavailable):
                pass
            task = self.get(task_id)
            if not ended and not task.is_terminal and _left(deadline) > 0:
                time.sleep(min(RETRY_PAUSE_S, _left(deadline)))
        return task

    def stream(self, task_id: str, *, timeout: float = 60.0) -> Iterator[StreamItem]:
        """The task's answer as it is produced (Server-Sent Events from the dispatcher).

        Yields each :class:`~loom_protocol.TaskStreamChunk` of a task submitted with
        ``action="stream"`` (join them with :func:`~loom_client.join_answer`), then one
        :class:`~loom_client.models.StreamEnd` when the task has ended. Other tasks yield only the
        end. Chunks produced before the call are yielded too.

        Args:
            task_id: The task.
            timeout: Seconds without a chunk or the end after which the stream gives up.

        Raises:
            Timeout: Nothing came for ``timeout`` s and the task has not ended.
            NotFound: No task has this id.
            Unavailable: The dispatcher did not answer or the stream broke.
        """
        url = self._base("dispatcher") + calls.stream_path(task_id)
        read_s = min(timeout, PING_S) + self.timeout
        try:
            with connect_sse(
                self._http,
                "GET",
                url,
                params=stream_params(timeout),
                timeout=httpx.Timeout(self.timeout, read=read_s),
            ) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    raise error_from_response(source.response)
                for sse in source.iter_sse():
                    item = read_event(sse, task_id)
                    if item is not None:
                        yield item
        except httpx.TransportError as exc:
            raise unavailable(exc, url) from exc

    def cancel(self, task_id: str) -> Task:
        """Cancel the task and its unfinished children.

        Returns:
            The task (``cancelled``, or still stopping when a worker holds it).

        Raises:
            NotFound: No task has this id.
            Conflict: It has already ended.
        """
        return self._send(calls.cancel(task_id))

    def approve(
        self,
        task_id: str,
        *,
        arguments: Mapping[str, Any] | None = None,
        by: str | None = None,
        reason: str | None = None,
    ) -> Task:
        """Approve the tool call the task waits on (status ``input_required``).

        Args:
            task_id: The task.
            arguments: Arguments to run the call with instead of the agent's.
            by: Who decides.
            reason: Why.

        Returns:
            The task, dispatched again (or pending).

        Raises:
            NotFound: No task has this id.
            Conflict: ``not_waiting_for_approval`` (``details["taskStatus"]``).
        """
        return self._send(calls.approve(task_id, arguments, by, reason))

    def reject(self, task_id: str, *, by: str | None = None, reason: str | None = None) -> Task:
        """Reject the tool call the task waits on: it is never run, the agent is told ``reason``.

        Raises:
            NotFound: No task has this id.
            Conflict: ``not_waiting_for_approval``.
        """
        return self._send(calls.reject(task_id, by, reason))

    # -- stored tasks, sessions, traces (query service) ------------------------------------------

    def tasks(
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
        """One page of the stored tasks, newest first (the query service's search).

        Args:
            status: Only these statuses (one or several).
            agent: Only tasks for this agent.
            session: Only tasks of this session.
            parent: Only children of this task.
            since: Created at or after (datetime, RFC 3339 or Unix seconds).
            until: Created at or before.
            text: Free text in the parameters, result or error (3 characters at least).
            limit: Tasks per page (the service's default when None; at most 200).
            cursor: ``next_cursor`` of the previous page.

        Raises:
            InvalidRequest: A bad filter (unknown status, short text, bad cursor).
        """
        return self._send(
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

    def iter_pages(self, *, page_size: int = 100, **filters: Any) -> Iterator[TaskPage]:
        """The pages of the search under ``filters`` (those of :meth:`tasks`), one call each,
        until the last; each page's ``counts`` and ``total`` are as of its own call.

        Args:
            page_size: Tasks per page (at most 200).
            **filters: ``status``, ``agent``, ``session``, ``parent``, ``since``, ``until``, ``text``.
        """
        cursor: str | None = None
        while True:
            page = self.tasks(limit=page_size, cursor=cursor, **filters)
            yield page
            cursor = page.next_cursor
            if cursor is None or not page.tasks:
                return

    def iter_tasks(
        self, *, page_size: int = 100, max_tasks: int | None = None, **filters: Any
    ) -> Iterator[TaskSummary]:
        """Every stored task under ``filters`` (those of :meth:`tasks`), newest first, page after page.

        Args:
            page_size: Tasks fetched per call.
            max_tasks: Stop after this many.
            **filters: ``status``, ``agent``, ``session``, ``parent``, ``since``, ``until``, ``text``.
        """
        seen = 0
        for page in self.iter_pages(page_size=page_size, **filters):
            for summary in page.tasks:
                if max_tasks is not None and seen >= max_tasks:
                    return
                seen += 1
                yield summary

    def session(self, session_id: str) -> SessionDetail:
        """A session's tasks (oldest first) with their LLM usage, and its totals.

        Raises:
            NotFound: No task has this session id.
        """
        return self._send(calls.session(session_id))

    def task_detail(self, task_id: str) -> TaskDetail:
        """The stored task, its events in causal order and its child tasks.

        Raises:
            NotFound: Neither a task record nor an event has this id.
        """
        return self._send(calls.task_detail(task_id))

    def trace(self, task_id: str, *, max_tasks: int = MAX_TRACE_TASKS) -> TraceNode:
        """The task and its descendants as a tree of steps, from the stored events.

        Args:
            task_id: The root task.
            max_tasks: The most tasks fetched (deeper descendants are left out).

        Raises:
            NotFound: The root task is not stored (yet).
        """
        budget = [max_tasks - 1]

        def node(detail: TaskDetail) -> TraceNode:
            children: list[TraceNode] = []
            for child in detail.children:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
                try:
                    children.append(node(self.task_detail(child.task_id)))
                except NotFound:
                    children.append(TraceNode(task_id=child.task_id, task=child))
            return build_node(detail, children)

        return node(self.task_detail(task_id))

    def live(
        self,
        *,
        task_id: Filter = None,
        event_type: Filter = None,
        agent: Filter = None,
        trace_id: Filter = None,
        session_id: Filter = None,
    ) -> LiveFeed:
        """The live feed of events (query's WebSocket), filtered; use it as a context manager::

            with loom.live(task_id=task.task_id) as feed:
                for message in feed:
                    ...

        Every filter given must match; a list matches any of its values. ``event_type`` takes
        exact types or prefixes such as ``"tool.*"``; ``agent`` the emitting agent.
        The feed is subscribed when the ``with`` block starts.
        """
        filters = live_filters(
            task_id=task_id, event_type=event_type, agent=agent, trace_id=trace_id, session_id=session_id
        )
        return LiveFeed(live_url(self.settings.query_url), filters, self.settings.headers(), self.timeout)

    # -- agents (registry) -----------------------------------------------------------------------

    def agents(self) -> list[AgentInfo]:
        """Every agent with a live instance, sorted by id, with its card and instances."""
        return self._send(calls.agents())

    # -- API keys (dispatcher, admin scope) ------------------------------------------------------

    def create_key(self, name: str, scopes: Iterable[Scope | str]) -> CreatedApiKey:
        """Create an API key (this client's key needs the ``admin`` scope).

        Args:
            name: What the key is for (``ci``, ``grafana``...).
            scopes: What it may do: ``read``, ``submit``, ``approve``, ``ingest``, ``admin``.

        Returns:
            The key itself (``key``: shown only this once, store it) and its ``record``.

        Raises:
            InvalidRequest: A bad name or an unknown scope (``fields``).
            Unauthorized: This client has no valid key.
            Forbidden: This client's key is not an admin key.
        """
        return self._send(calls.create_key(name, scopes))

    def list_keys(self) -> list[ApiKeyRecord]:
        """The stored API keys (never the keys themselves), by name; the services' fixed
        ``LOOM_API_KEYS`` are not listed.

        Raises:
            Unauthorized: This client has no valid key.
            Forbidden: This client's key is not an admin key.
        """
        return self._send(calls.list_keys())

    def revoke_key(self, key_id: str) -> None:
        """Revoke the stored key with this ``id`` (as listed): every service refuses it within
        a few seconds (``LOOM_API_KEYS_REFRESH_S``).

        Raises:
            NotFound: No stored key has this id.
            Unauthorized: This client has no valid key.
            Forbidden: This client's key is not an admin key.
        """
        self._send(calls.revoke_key(key_id))

    # -- replay ----------------------------------------------------------------------------------

    def create_replay(
        self,
        *,
        task_id: str | None = None,
        trace_id: str | None = None,
        session_id: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> ReplaySession:
        """A replay session over the recorded events of a task, trace or session.

        Raises:
            NotFound: No events match.
            InvalidRequest: Nothing to replay was named.
        """
        return self._send(
            calls.create_replay(
                task_id=task_id,
                trace_id=trace_id,
                session_id=session_id,
                start_time=start_time,
                end_time=end_time,
            )
        )

    def replay_session(self, session_id: str) -> ReplaySession:
        """The replay session and its cursor.

        Raises:
            NotFound: It expired or never existed.
        """
        return self._send(calls.get_replay(session_id))

    def replay_step(
        self,
        session_id: str,
        direction: Literal["forward", "backward"] = "forward",
        *,
        state: calls.ReplayState = "none",
    ) -> ReplayFrame:
        """Move the replay cursor one event forward or backward.

        Args:
            session_id: The replay session.
            direction: ``forward`` or ``backward``.
            state: The rebuilt state to return with the event: ``none``, ``task`` or ``full``.

        Raises:
            Conflict: At the first (backward) or last (forward) event.
        """
        return self._send(calls.step_replay(session_id, direction, state))

    def replay_jump(self, session_id: str, index: int, *, state: calls.ReplayState = "none") -> ReplayFrame:
        """Move the replay cursor to event ``index`` (from 0).

        Raises:
            InvalidRequest: ``index`` is outside the session.
        """
        return self._send(calls.jump_replay(session_id, index, state))

    def delete_replay(self, session_id: str) -> None:
        """End a replay session (it also expires on its own)."""
        self._send(calls.delete_replay(session_id))
