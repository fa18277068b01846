"""Agents, instances and the registry messages.

An agent (``AgentCard.agent_id``, e.g. ``calculator``) runs as any number of instances
(processes, pods), each known by its ``instance_id``; one worker process may host several
agents. Workers send a :class:`Heartbeat` on ``loom.registry.heartbeat.<instance>``; the
dispatcher asks the registry for an instance with a :class:`PickRequest` on
``loom.registry.pick`` (request/reply) and which agents exist with an empty request on
``loom.registry.agents`` (answered by :class:`KnownAgents`); the registry announces :class:`MemberChanged` on
``loom.registry.member.<up|down>``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, Field

from loom_protocol.base import AgentId, InstanceId, LoomModel, TaskId, utc_now

__all__ = [
    "AgentCapability",
    "AgentCard",
    "Heartbeat",
    "InstanceLoad",
    "KnownAgents",
    "MemberChanged",
    "MembershipChange",
    "PickReply",
    "PickRequest",
    "UNKNOWN_AGENT_LABEL",
]

UNKNOWN_AGENT_LABEL = "(unknown)"
"""The metric label every service uses for an agent the registry never saw: never the name itself,
so a typo cannot mint label values (not a valid agent id, so it cannot collide with one)."""


class AgentCapability(StrEnum):
    """What an agent can do (its A2A capability declaration).

    Attributes:
        REFLECTION: Reflects on and revises its own output.
        TOOL_USE: Calls tools.
        PLANNING: Plans multi-step work.
        MULTI_AGENT: Delegates to other agents.
    """

    REFLECTION = "reflection"
    TOOL_USE = "tool_use"
    PLANNING = "planning"
    MULTI_AGENT = "multi_agent"


class AgentCard(LoomModel):
    """An agent's A2A capability declaration (its ``AgentCard``).

    Attributes:
        agent_id: The agent id tasks target; 1..128 characters of ``[A-Za-z0-9_-]``.
        name: Human-readable name.
        description: What it does.
        version: The agent's version.
        capabilities: Declared capabilities.
        tools: Names of the tools it can call.
        metadata: Free-form annotations.
    """

    agent_id: AgentId
    name: str
    description: str = ""
    version: str = "0.1.0"
    capabilities: list[AgentCapability] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class InstanceLoad(LoomModel):
    """How busy an instance is.

    Attributes:
        in_flight: Tasks it is running now.
        capacity: How many tasks it runs at once (at least 1).
    """

    in_flight: int = Field(ge=0)
    capacity: int = Field(ge=1)

    @property
    def free(self) -> int:
        """Free slots: ``capacity - in_flight``, never below 0."""
        return max(self.capacity - self.in_flight, 0)


MAX_HEARTBEAT_INTERVAL_S = 3600.0
"""The longest heartbeat interval accepted, in seconds."""


class Heartbeat(LoomModel):
    """An instance's periodic liveness report; core NATS ``loom.registry.heartbeat.<instance>``.

    Heartbeats are not persisted: a missed one is simply late, and the registry declares an
    instance down after several missed intervals.

    Attributes:
        instance_id: The instance; 1..128 characters of ``[A-Za-z0-9_-]`` (a subject token).
        agents: The agents this instance hosts.
        host: Host name.
        pid: Process id.
        load: Current load.
        version: The worker's version.
        draining: True when shutting down: keep it alive but send it no new work.
        interval_s: The sender's heartbeat interval in seconds (> 0, at most
            :data:`MAX_HEARTBEAT_INTERVAL_S`: a registration cannot outlive its sender by much).
        sent_at: When it was sent.
    """

    instance_id: InstanceId
    agents: list[AgentCard] = Field(default_factory=list)
    host: str
    pid: int = Field(ge=0)
    load: InstanceLoad
    version: str = "0.1.0"
    draining: bool = False
    interval_s: float = Field(default=1.0, gt=0, le=MAX_HEARTBEAT_INTERVAL_S, allow_inf_nan=False)
    sent_at: AwareDatetime = Field(default_factory=utc_now)

    @property
    def agent_ids(self) -> list[str]:
        """The ids of the hosted agents, in card order."""
        return [card.agent_id for card in self.agents]


class PickRequest(LoomModel):
    """Ask the registry for an instance of an agent; core NATS request on ``loom.registry.pick``.

    Attributes:
        agent_id: The agent to run.
        task_id: The task to place, for logs and tracing.
        exclude: Instance ids not to pick (e.g. the one that just failed the task).
    """

    agent_id: AgentId
    task_id: TaskId | None = None
    exclude: list[str] = Field(default_factory=list)


class PickReply(LoomModel):
    """The registry's answer to a :class:`PickRequest`.

    Attributes:
        agent_id: The agent asked for.
        instance_id: The chosen instance, or None when there is none.
        reason: Why none was chosen.
        candidates: How many healthy instances were considered.
    """

    agent_id: AgentId
    instance_id: InstanceId | None = None
    reason: str | None = None
    candidates: int = Field(default=0, ge=0)


class KnownAgents(LoomModel):
    """The registry's answer on ``loom.registry.agents`` (core NATS request/reply).

    An agent is known once the registry has received one heartbeat of an instance hosting
    it; it stays known after its instances leave and across registry restarts (the registry
    keeps the set in Redis). The dispatcher refuses tasks for agents outside this set unless
    the submitter asks to wait for the agent.

    Attributes:
        agent_ids: Every agent id the registry has ever seen, sorted.
    """

    agent_ids: list[AgentId] = Field(default_factory=list)


class MembershipChange(StrEnum):
    """Kind of membership change.

    Attributes:
        UP: An instance joined (first heartbeat).
        DOWN: An instance left (missed heartbeats or said goodbye).
    """

    UP = "up"
    DOWN = "down"


class MemberChanged(LoomModel):
    """An instance joined or left; published on ``loom.registry.member.<up|down>``.

    Attributes:
        instance_id: The instance.
        change: Up or down.
        agents: The ids of the agents it hosts, so consumers can re-dispatch its work.
        reason: Why, e.g. ``"missed 3 heartbeats"``.
        at: When the registry noticed.
    """

    instance_id: InstanceId
    change: MembershipChange
    agents: list[str] = Field(default_factory=list)
    reason: str = ""
    at: AwareDatetime = Field(default_factory=utc_now)
