"""Who may publish and subscribe to what on NATS: one user per service role, each allowed the
subjects its part of the protocol needs and nothing else.

==========  =====================================================================================
role        may publish (besides replies and its own JetStream acks)
==========  =====================================================================================
dispatcher  assignments, cancels, dead letters, status announcements, its lifecycle events, picks;
            the JetStream API (it creates the task streams and the API-key bucket)
registry    membership changes; answers picks; the JetStream API (the registry stream)
worker      its heartbeats, reports on its attempts, its events, answer chunks, child tasks and cancel
            requests; its own key-value buckets (journal, session memory) and the protocol's
            streams where missing, nothing else of the JetStream API
ingest      events received over HTTP and WebSocket (as its own), dead-letter records; the JetStream API (it
            creates every stream and consumes them)
query       nothing; reads events, answer chunks and the API-key bucket
replay      nothing; reads the API-key bucket
client      tasks and cancel requests; follows statuses and answer chunks (the SDK and CLI)
admin       anything (operators and test harnesses)
==========  =====================================================================================

Only the dispatcher publishes assignments, cancels and task statuses, only workers heartbeats and
reports, only the registry membership changes; each event's subject names its sender (a worker
instance, the dispatcher or ingest) and only that sender may publish there. A worker user may be
bound to one instance (:func:`role_permissions` with ``instance_id``): it then sends heartbeats,
reports and events for and receives the assignments of that instance only, so the instance a
report or an event names is the connection's identity (the dispatcher checks that a report's body
names its subject's instance, ingest that an event's ``instanceid`` does).
No anonymous access: a server configured with :func:`server_users` accepts only these users.

Each user has an inbox of its own (``_INBOX_<user>``, :func:`inbox_prefix`): replies to its
requests, JetStream's included, go there and no other user may subscribe to them. A client
connects with that prefix (``inbox_prefix=`` in nats-py and FastStream).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum

from loom_protocol import subjects
from loom_protocol.auth import API_KEYS_BUCKET
from loom_protocol.base import LoomModel
from loom_protocol.jetstream import ALL_STREAMS, TASKS_STREAM
from loom_protocol.journal import JOURNAL_BUCKET
from loom_protocol.memory import SESSIONS_BUCKET

__all__ = [
    "USER_PATTERN",
    "Permissions",
    "Role",
    "authorization",
    "inbox_prefix",
    "password_variable",
    "role_permissions",
    "server_users",
]

USER_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""What a NATS user name may be: it becomes a subject token of the user's inbox."""
_USER = re.compile(USER_PATTERN)


class Role(StrEnum):
    """The roles a NATS user can have; each has the permissions of :func:`role_permissions`."""

    ADMIN = "admin"
    DISPATCHER = "dispatcher"
    REGISTRY = "registry"
    WORKER = "worker"
    INGEST = "ingest"
    QUERY = "query"
    REPLAY = "replay"
    CLIENT = "client"


class Permissions(LoomModel):
    """A user's subject permissions, as nats-server's ``permissions`` block holds them.

    Attributes:
        publish: Subjects the user may publish on.
        subscribe: Subjects the user may subscribe to.
        deny_publish: Subjects it may not publish on even where ``publish`` matches.
        allow_responses: Whether it may answer a request it received (one reply per request).
    """

    publish: list[str]
    subscribe: list[str]
    deny_publish: list[str] = []
    allow_responses: bool = False


def inbox_prefix(user: str) -> str:
    """The prefix of ``user``'s inboxes: only ``user`` may subscribe under it.

    Raises:
        ValueError: If ``user`` is not a valid user name (:data:`USER_PATTERN`).
    """
    if not _USER.match(user):
        raise ValueError(f"NATS user {user!r} does not match {USER_PATTERN}")
    return f"_INBOX_{user}"


_JS = "$JS.API"
_JS_ADMIN = [f"{_JS}.>"]
"""The whole JetStream API: for the services that create streams and durable consumers."""
_JS_ADMIN_ONLY = [
    f"{_JS}.STREAM.DELETE.>",
    f"{_JS}.STREAM.PURGE.>",
    f"{_JS}.STREAM.MSG.DELETE.>",
    f"{_JS}.STREAM.SNAPSHOT.>",
    f"{_JS}.STREAM.RESTORE.>",
    f"{_JS}.STREAM.PEER.>",
    f"{_JS}.STREAM.LEADER.>",
    f"{_JS}.META.>",
    f"{_JS}.SERVER.>",
    f"{_JS}.ACCOUNT.>",
]
"""What no service needs: denied to every role but the admin, even where ``$JS.API.>`` is allowed."""


def _kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def _read_stream(stream: str) -> list[str]:
    """The JetStream API calls that read ``stream``: its info, single messages, ephemeral (ordered)
    consumers as key-value watches and key listings use."""
    return [
        f"{_JS}.INFO",
        f"{_JS}.STREAM.INFO.{stream}",
        f"{_JS}.STREAM.MSG.GET.{stream}",
        f"{_JS}.DIRECT.GET.{stream}",
        f"{_JS}.DIRECT.GET.{stream}.>",
        f"{_JS}.CONSUMER.CREATE.{stream}",
        f"{_JS}.CONSUMER.CREATE.{stream}.>",
        f"{_JS}.CONSUMER.INFO.{stream}.*",
        f"{_JS}.CONSUMER.DELETE.{stream}.*",
        f"{_JS}.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _own_bucket(bucket: str) -> list[str]:
    """Creating, reading and writing the key-value bucket ``bucket``."""
    stream = _kv_stream(bucket)
    return [
        f"{_JS}.STREAM.CREATE.{stream}",
        f"{_JS}.STREAM.UPDATE.{stream}",
        *_read_stream(stream),
        f"$KV.{bucket}.>",
    ]


def _read_bucket(bucket: str) -> list[str]:
    return _read_stream(_kv_stream(bucket))


def role_permissions(role: Role | str, user: str, *, instance_id: str | None = None) -> Permissions:
    """The permissions of ``user`` in ``role``.

    Args:
        role: The user's role.
        user: The user's name (its inbox, :func:`inbox_prefix`, is its alone).
        instance_id: For a worker: the one instance whose heartbeats it sends and whose assignments
            it receives; any instance when ``None``.

    Returns:
        The user's permissions.

    Raises:
        ValueError: If ``role`` is unknown, ``user`` is not a valid user name, or ``instance_id``
            is not a valid subject token.
    """
    role = Role(role)
    inbox = f"{inbox_prefix(user)}.>"
    if role is Role.ADMIN:
        return Permissions(publish=[">"], subscribe=[">"], allow_responses=True)
    tasks_read = [  # a task's last status (a direct get names its subject), nothing else
        f"{_JS}.INFO",
        f"{_JS}.STREAM.INFO.{TASKS_STREAM.name}",
        f"{_JS}.DIRECT.GET.{TASKS_STREAM.name}.{subjects.TASK_STATUS_ALL}",
    ]
    keys = _read_bucket(API_KEYS_BUCKET)
    if role is Role.DISPATCHER:
        return Permissions(
            publish=[
                subjects.TASK_SUBMITTED_ALL,  # REST and A2A submissions
                subjects.TASK_ASSIGNED_ALL,
                subjects.TASK_STATUS_ALL,
                subjects.TASK_CANCEL_ALL,
                subjects.TASK_DEAD_ALL,
                subjects.service_events_of("dispatcher"),
                subjects.REJECTED_ALL,
                subjects.REGISTRY_PICK,
                subjects.REGISTRY_AGENTS,
                f"$KV.{API_KEYS_BUCKET}.>",
                *_JS_ADMIN,
                "$JS.ACK.>",
            ],
            subscribe=[
                subjects.TASK_ALL,
                subjects.REGISTRY_HEARTBEAT_ALL,
                subjects.REGISTRY_MEMBER_ALL,
                subjects.TASK_STREAM_ALL,
                subjects.EVENT_ALL,
                inbox,
            ],
            deny_publish=_JS_ADMIN_ONLY,
        )
    if role is Role.REGISTRY:
        return Permissions(
            publish=[subjects.REGISTRY_MEMBER_ALL, subjects.REJECTED_ALL, *_JS_ADMIN, "$JS.ACK.>"],
            subscribe=[
                subjects.REGISTRY_HEARTBEAT_ALL,
                subjects.REGISTRY_PICK,
                subjects.REGISTRY_AGENTS,
                subjects.REGISTRY_MEMBER_ALL,
                inbox,
            ],
            deny_publish=_JS_ADMIN_ONLY,
            allow_responses=True,
        )
    if role is Role.INGEST:
        return Permissions(
            # events that arrive over WebSocket, CloudEvents HTTP and OTLP go through the stream
            publish=[subjects.service_events_of("ingest"), subjects.REJECTED_ALL, *_JS_ADMIN, "$JS.ACK.>"],
            subscribe=[inbox],
            deny_publish=_JS_ADMIN_ONLY,
        )
    if role is Role.QUERY:
        return Permissions(
            publish=[*keys],
            subscribe=[subjects.EVENT_ALL, subjects.TASK_STREAM_ALL, subjects.TASK_STATUS_ALL, inbox],
        )
    if role is Role.REPLAY:
        return Permissions(publish=[*keys], subscribe=[inbox])
    if role is Role.CLIENT:
        return Permissions(
            publish=[subjects.TASK_SUBMITTED_ALL, subjects.TASK_CANCEL_REQUEST_ALL, *tasks_read],
            subscribe=[subjects.TASK_STATUS_ALL, subjects.TASK_STREAM_ALL, inbox],
        )
    heartbeat, assigned, reports, events = (
        subjects.REGISTRY_HEARTBEAT_ALL,
        subjects.TASK_ASSIGNED_ALL,
        subjects.TASK_REPORT_ALL,
        subjects.EVENT_WORKER_ALL,
    )
    if instance_id is not None:
        heartbeat = subjects.registry_heartbeat(instance_id)
        assigned = subjects.task_assigned(instance_id)
        reports = subjects.task_reports_of(instance_id)
        events = subjects.instance_events_of(instance_id)
    return Permissions(
        publish=[
            heartbeat,
            reports,  # statuses are the dispatcher's: a worker reports to it
            events,
            subjects.TASK_STREAM_ALL,
            subjects.TASK_SUBMITTED_ALL,  # an orchestrator's child tasks
            subjects.TASK_CANCEL_REQUEST_ALL,
            subjects.rejected("worker"),
            *tasks_read,
            # the protocol's streams where missing (creating never changes one that exists)
            *(f"{_JS}.STREAM.CREATE.{spec.name}" for spec in ALL_STREAMS),
            *_own_bucket(JOURNAL_BUCKET),
            *_own_bucket(SESSIONS_BUCKET),
        ],
        subscribe=[
            assigned,
            subjects.TASK_CANCEL_ALL,
            subjects.TASK_STATUS_ALL,  # children's statuses
            inbox,
        ],
    )


def _block(permissions: Permissions) -> dict[str, object]:
    publish: dict[str, object] = {"allow": list(dict.fromkeys(permissions.publish))}
    if permissions.deny_publish:
        publish["deny"] = permissions.deny_publish
    block: dict[str, object] = {"publish": publish, "subscribe": {"allow": permissions.subscribe}}
    if permissions.allow_responses:
        block["allow_responses"] = True
    return block


def server_users(
    users: Iterable[tuple[str, Role | str, str]], instances: Mapping[str, str] | None = None
) -> str:
    """The ``users`` list of a nats-server ``authorization`` (or account) block.

    Args:
        users: ``(user, role, password)`` for each user. ``password`` is written as given: a
            literal, or ``$NAME`` for nats-server to read from its environment (a variable the
            configuration does not define).
        instances: Worker users bound to one instance: user name -> instance id.

    Returns:
        ``[ {user: ..., password: ..., permissions: {...}}, ... ]`` in nats-server's
        configuration syntax (JSON is a subset of it, except the ``$NAME`` references).
    """
    instances = instances or {}
    entries = []
    for user, role, password in users:
        permissions = role_permissions(role, user, instance_id=instances.get(user))
        secret = password if password.startswith("$") else json.dumps(password)
        block = json.dumps(_block(permissions))
        entries.append(f"{{user: {json.dumps(user)}, password: {secret}, permissions: {block}}}")
    return "[\n  " + ",\n  ".join(entries) + "\n]"


def password_variable(user: str) -> str:
    """The environment variable nats-server reads ``user``'s password from in the configuration
    :func:`authorization` writes: ``LOOM_NATS_PASSWORD_<USER>`` (``-`` as ``_``)."""
    return "LOOM_NATS_PASSWORD_" + user.upper().replace("-", "_")


def authorization(workers: Iterable[str] = ()) -> str:
    """A nats-server ``authorization`` block: one user per role, named after it, and one worker
    user per instance of ``workers`` (named after the instance, bound to it); each password read
    from the server's environment (:func:`password_variable`).

    Args:
        workers: Instance ids that get a worker user of their own.

    Returns:
        The block, to include in (or append to) a nats-server configuration.
    """
    users = [(role.value, role, f"${password_variable(role.value)}") for role in Role]
    bound = {instance: instance for instance in workers}
    users += [(instance, Role.WORKER, f"${password_variable(instance)}") for instance in bound]
    return f"authorization {{\n  users = {server_users(users, bound)}\n}}\n"
