"""GET /api/agents: agents, their cards and live instances."""

from __future__ import annotations

from fastapi import APIRouter
from loom_protocol import AgentCard, InstanceLoad, LoomModel
from pydantic import Field

from .state import StateDep

router = APIRouter(tags=["agents"])


class InstanceView(LoomModel):
    """One live instance hosting an agent, as of its last heartbeat."""

    instance_id: str
    host: str
    pid: int
    version: str
    load: InstanceLoad
    draining: bool
    last_heartbeat_age_s: float = Field(description="seconds since its last heartbeat")


class AgentView(LoomModel):
    agent_id: str
    card: AgentCard
    instances: list[InstanceView]


class AgentList(LoomModel):
    agents: list[AgentView] = Field(description="sorted by agentId")


@router.get("/api/agents", response_model_exclude_none=True)
async def list_agents(state: StateDep) -> AgentList:
    agents: dict[str, AgentView] = {}
    for inst in await state.membership.all_instances():
        hb = inst.heartbeat
        for card in hb.agents:
            view = agents.setdefault(
                card.agent_id, AgentView(agent_id=card.agent_id, card=card, instances=[])
            )
            view.instances.append(
                InstanceView(
                    instance_id=hb.instance_id,
                    host=hb.host,
                    pid=hb.pid,
                    version=hb.version,
                    load=hb.load,
                    draining=hb.draining,
                    last_heartbeat_age_s=round(inst.age_s, 3),
                )
            )
    return AgentList(agents=sorted(agents.values(), key=lambda a: a.agent_id))
