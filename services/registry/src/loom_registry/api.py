"""GET /api/agents: agents, their cards and live instances."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from .membership import Membership

router = APIRouter()


@router.get("/api/agents")
async def list_agents(request: Request) -> dict[str, Any]:
    membership: Membership = request.app.state.membership
    agents: dict[str, dict[str, Any]] = {}
    for inst in await membership.all_instances():
        hb = inst.heartbeat
        for card in hb.agents:
            entry = agents.setdefault(
                card.agent_id, {"agentId": card.agent_id, "card": card.to_wire(), "instances": []}
            )
            entry["instances"].append(
                {
                    "instanceId": hb.instance_id,
                    "host": hb.host,
                    "pid": hb.pid,
                    "version": hb.version,
                    "load": hb.load.to_wire(),
                    "draining": hb.draining,
                    "lastHeartbeatAgeS": round(inst.age_s, 3),
                }
            )
    return {"agents": sorted(agents.values(), key=lambda a: a["agentId"])}
