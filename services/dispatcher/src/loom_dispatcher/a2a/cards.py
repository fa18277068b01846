"""Agent cards: what each Loom agent says of itself in its workers' heartbeats, as A2A agent
cards, and the card of the deployment.

Every replica hears every heartbeat (``loom.registry.heartbeat.*``, core NATS, no queue group)
and keeps the latest :class:`~loom_protocol.AgentCard` of each agent: cards are what the workers
announce, so any replica answers with the same card once it has heard one heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from loom_protocol import AgentCard, Heartbeat, subjects
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from .errors import SUPPORTED_VERSION
from .mapping import HOW_TO_ANSWER

log = logging.getLogger(__name__)

BINDING = "JSONRPC"
MODES = ["text/plain", "application/json"]
CAPABILITIES = {"streaming": True, "pushNotifications": False, "extendedAgentCard": False}
USAGE = (
    "A message's text parts become the task's parameters.prompt and its data parts (JSON objects) "
    "are merged into its parameters; the message metadata is the task's metadata (for example "
    '{"approvalTools": ["calculator"]} to have calls of that tool approved first). The contextId is '
    "the Loom session id. A task waiting for approval of a tool call is in TASK_STATE_INPUT_REQUIRED. "
    + HOW_TO_ANSWER
)


class CardBook:
    """The latest card of every agent heard in a heartbeat since this replica started."""

    def __init__(self) -> None:
        self._cards: dict[str, AgentCard] = {}
        self._heard: dict[str, asyncio.Event] = {}
        self._sub: Subscription | None = None

    async def start(self, nc: Client) -> None:
        self._sub = await nc.subscribe(subjects.REGISTRY_HEARTBEAT_ALL, cb=self._on_heartbeat)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            heartbeat = Heartbeat.from_json(msg.data)
        except (ValidationError, ValueError):
            return  # the registry dead-letters it
        if msg.subject != subjects.registry_heartbeat(heartbeat.instance_id):
            return  # about another instance than its sender: the registry dead-letters it
        for card in heartbeat.agents:
            self._cards[card.agent_id] = card
            if (heard := self._heard.pop(card.agent_id, None)) is not None:
                heard.set()

    def get(self, agent_id: str) -> AgentCard | None:
        return self._cards.get(agent_id)

    def all(self) -> list[AgentCard]:
        return [self._cards[a] for a in sorted(self._cards)]

    async def wait(self, agent_id: str, timeout_s: float) -> AgentCard | None:
        """The card of ``agent_id`` once a heartbeat names it, or None after ``timeout_s``."""
        if (card := self._cards.get(agent_id)) is not None or timeout_s <= 0:
            return card
        heard = self._heard.setdefault(agent_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(heard.wait(), timeout_s)
        return self._cards.get(agent_id)


SECURED: dict[str, Any] = {
    "securitySchemes": {
        "loomApiKey": {
            "httpAuthSecurityScheme": {
                "scheme": "Bearer",
                "description": "A Loom API key (Authorization: Bearer loom_...) with the submit and read "
                "scopes; `loom keys create NAME --scope submit --scope read` makes one.",
            }
        }
    },
    "securityRequirements": [{"schemes": {"loomApiKey": {"list": ["submit", "read"]}}}],
}
"""What a card adds once the deployment requires API keys: the scheme and the scopes a caller needs."""


def _interface(url: str) -> dict[str, str]:
    return {"url": url, "protocolBinding": BINDING, "protocolVersion": SUPPORTED_VERSION}


def agent_card(card: AgentCard, url: str) -> dict[str, Any]:
    """The A2A card of one Loom agent served at ``url``: one skill per tool it can call (or,
    without tools, one for the agent itself)."""
    tags = [card.agent_id, *(c.value for c in card.capabilities)]
    skills = [
        {"id": tool, "name": tool, "description": f"{card.name} calls the tool {tool}", "tags": tags}
        for tool in card.tools
    ] or [
        {"id": card.agent_id, "name": card.name, "description": card.description or card.name, "tags": tags}
    ]
    about = card.description or f"The Loom agent {card.agent_id}."
    return {
        "name": card.name,
        "description": f"{about} {USAGE}",
        "supportedInterfaces": [_interface(url)],
        "version": card.version,
        "capabilities": CAPABILITIES,
        "defaultInputModes": MODES,
        "defaultOutputModes": MODES,
        "skills": skills,
    }


def unheard_card(agent_id: str) -> AgentCard:
    """The card of an agent the registry knows but no heartbeat here named (none is running)."""
    return AgentCard(
        agent_id=agent_id, name=agent_id, description=f"The Loom agent {agent_id} (no instance runs now)."
    )


def deployment_card(cards: list[AgentCard], base_url: str) -> dict[str, Any]:
    """The card of the deployment: its agents as skills, its endpoint ``<base>/a2a``."""
    skills = [
        {
            "id": card.agent_id,
            "name": card.name,
            "description": f"{card.description or card.name} (A2A agent at {base_url}/a2a/{card.agent_id})",
            "tags": [card.agent_id, *card.tools],
        }
        for card in cards
    ] or [{"id": "loom", "name": "Loom", "description": "No agent has registered yet.", "tags": ["loom"]}]
    description = (
        "A Loom deployment. Each agent is an A2A agent of its own at /a2a/<agentId> (its card at "
        "/a2a/<agentId>/.well-known/agent-card.json); the skills below are those agents. This "
        "endpoint reads, lists, cancels and follows the tasks of every agent, and starts a task for "
        "the agent named in the message metadata targetAgent. " + USAGE
    )
    return {
        "name": "Loom",
        "description": description,
        "supportedInterfaces": [_interface(f"{base_url}/a2a")],
        "version": "0.1.0",
        "capabilities": CAPABILITIES,
        "defaultInputModes": MODES,
        "defaultOutputModes": MODES,
        "skills": skills,
    }
