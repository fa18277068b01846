"""The registry's state in Redis: its key layout and the pick script, for every service reading it.

The registry writes this state from heartbeats; it and the dispatcher both pick from it with
:data:`PICK_SCRIPT`, one atomic script per pick. The dispatcher runs the script itself instead
of asking the registry over NATS: a pick is then one Redis round trip on the task path rather
than a request through another process that makes the same round trip (docs/adr/0006-picks.md).

Keys, under ``<prefix>:reg`` (:class:`RegistryKeys`):

- ``inst:<id>``   the instance's last heartbeat (JSON), expiring after N missed heartbeats;
- ``known``       instance ids believed alive (the registry's sweeper compares it with the above);
- ``agent:<a>``   instance ids serving agent ``a``; ``agents`` every agent id ever seen;
- ``rr:<a>``      agent ``a``'s rotation counter (INCR is atomic: every picker shares one rotation);
- ``draining``    instance ids whose last heartbeat said they are draining (never picked);
- ``strategy``    how the registry is configured to pick (:data:`PickStrategy`; absent: round robin);
- ``strikes:<id>`` attempts of the instance that timed out or failed lately (the dispatcher counts
  them, :data:`STRIKE_SCRIPT`; the count expires a window after the first): an instance with
  :data:`MAX_STRIKES` is picked only when no other instance of the agent is live.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PickStrategy = Literal["round_robin", "least_loaded"]
PICK_STRATEGIES: tuple[PickStrategy, ...] = ("round_robin", "least_loaded")
MAX_STRIKES = 3
"""Strikes (timed-out or failed attempts within the window) that keep an instance from picks."""
STRIKE_WINDOW_S = 60.0
"""How long an instance's strikes are remembered, from its first strike."""

PICK_SCRIPT = """
local ids = redis.call('SMEMBERS', KEYS[1])
table.sort(ids)
local strategy = ARGV[2]
if strategy == '' then strategy = redis.call('GET', KEYS[4]) or 'round_robin' end
local least = strategy == 'least_loaded'
local max_strikes = tonumber(ARGV[4]) or 0
local excluded = {}
for i = 5, #ARGV do excluded[ARGV[i]] = true end
local live, others, loads = {}, {}, {}
for _, id in ipairs(ids) do
  if redis.call('SISMEMBER', KEYS[3], id) == 0 then
    local alive
    if least then
      local raw = redis.call('GET', ARGV[1] .. id)
      alive = raw ~= false
      if alive then
        local load = 0
        local ok, hb = pcall(cjson.decode, raw)
        if ok and type(hb) == 'table' and type(hb.load) == 'table' then
          local in_flight, capacity = tonumber(hb.load.inFlight), tonumber(hb.load.capacity)
          if in_flight and capacity and capacity > 0 then load = in_flight / capacity end
        end
        loads[id] = load
      end
    else
      alive = redis.call('EXISTS', ARGV[1] .. id) == 1
    end
    if alive then
      live[#live + 1] = id
      local struck = max_strikes > 0 and (tonumber(redis.call('GET', ARGV[3] .. id)) or 0) >= max_strikes
      if not excluded[id] and not struck then others[#others + 1] = id end
    end
  end
end
local candidates = others
if #candidates == 0 then candidates = live end
if #candidates == 0 then return {false, 0} end
if least then
  local lowest
  for _, id in ipairs(candidates) do
    if lowest == nil or loads[id] < lowest then lowest = loads[id] end
  end
  local best = {}
  for _, id in ipairs(candidates) do
    if loads[id] == lowest then best[#best + 1] = id end
  end
  candidates = best
end
local turn = redis.call('INCR', KEYS[2])
return {candidates[((turn - 1) % #candidates) + 1], #candidates}
"""
"""Pick one live, non-draining instance of an agent; answers ``{instance id or nil, candidates}``.

KEYS: :meth:`RegistryKeys.pick_keys`. ARGV: :meth:`RegistryKeys.pick_args` -- the instance key
prefix, the strategy (empty: the one stored under ``strategy``), the strikes key prefix and the
strikes that keep an instance out (0: none do), then instance ids to leave out; excluded and
struck instances are picked only when nothing else is left. Instances are taken in id order and
the agent's counter chooses among them (round robin); ``least_loaded`` first keeps those with the
lowest in-flight/capacity ratio in their last heartbeat. The instance and strikes keys are built
from prefixes, not declared in KEYS: fine on one Redis, not on Redis Cluster.
"""

PICK_FUNCTION = f"local function pick(KEYS, ARGV)\n{PICK_SCRIPT}end\n"
""":data:`PICK_SCRIPT` as a Lua function ``pick(KEYS, ARGV)`` answering the same pair, for a script
that picks and acts on the pick in the same atomic step (the dispatcher stores a new task at its
picked instance with it). Its parameters shadow the script's own ``KEYS`` and ``ARGV``."""


@dataclass(frozen=True)
class RegistryKeys:
    """The Redis keys of the registry's state under ``prefix`` (the services' ``redis_prefix``)."""

    prefix: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:reg"

    def instance(self, instance_id: str) -> str:
        return f"{self.base}:inst:{instance_id}"

    def agent(self, agent_id: str) -> str:
        return f"{self.base}:agent:{agent_id}"

    def rotation(self, agent_id: str) -> str:
        return f"{self.base}:rr:{agent_id}"

    @property
    def known(self) -> str:
        return f"{self.base}:known"

    @property
    def agents(self) -> str:
        return f"{self.base}:agents"

    @property
    def draining(self) -> str:
        return f"{self.base}:draining"

    @property
    def strategy(self) -> str:
        return f"{self.base}:strategy"

    def strikes(self, instance_id: str) -> str:
        return f"{self.base}:strikes:{instance_id}"

    def pick_keys(self, agent_id: str) -> list[str]:
        return [self.agent(agent_id), self.rotation(agent_id), self.draining, self.strategy]

    def pick_args(
        self,
        strategy: PickStrategy | None = None,
        exclude: tuple[str, ...] = (),
        max_strikes: int = MAX_STRIKES,
    ) -> list[str]:
        """``strategy`` None: the registry's, as stored under :attr:`strategy`."""
        return [self.instance(""), strategy or "", self.strikes(""), str(max_strikes), *exclude]


STRIKE_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""
"""Count one strike of an instance: KEYS ``[strikes(id)]``, ARGV ``[window in ms]``; the new count."""
