"""Which agents a worker hosts: ``LOOM_WORKER_AGENTS`` resolved to ``Agent`` objects.

Each comma-separated entry is one of

- a demo agent id (``echo``, ``calculator``, ``orchestrator``);
- an import path ``package.module:attribute`` naming an ``Agent`` instance, an ``Agent``
  subclass (constructed with no arguments) or a factory returning an ``Agent``;
- ``entrypoints``: every entry point of the group ``loom.agents`` installed in the worker's
  environment, each naming one of the objects above.

A class or factory that has a parameter named ``provider`` gets the worker's configured LLM
provider there; an agent built by ``react_agent(...)`` without a provider gets it too. Any
problem (a bad path, an import error, the wrong type, two agents with one id) raises
:class:`AgentLoadError` with a one-line message; ``python -m loom_agent_worker`` prints that line
and exits with status 2.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .runtime import DEMO_AGENT_IDS, Agent, LLMProvider, build_demo_agents
from .runtime.builder import bind_worker_provider

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "loom.agents"
ENTRYPOINTS = "entrypoints"


class AgentLoadError(Exception):
    """An entry of ``LOOM_WORKER_AGENTS`` cannot be loaded; the message is one line."""


def load_agents(
    specs: Iterable[str],
    provider: LLMProvider,
    *,
    entry_points_of: Callable[[str], Iterable[EntryPoint]] | None = None,
) -> dict[str, Agent]:
    """The agents named by ``specs`` (the entries of ``LOOM_WORKER_AGENTS``), by agent id.

    ``entry_points_of`` (tests) replaces the lookup of the installed entry points by group.
    """
    specs = [s.strip() for s in specs if s.strip()]
    if not specs:
        raise AgentLoadError("LOOM_WORKER_AGENTS names no agents")
    demo: dict[str, Agent] | None = None
    agents: dict[str, Agent] = {}
    origins: dict[str, str] = {}

    def add(agent: Agent, origin: str) -> None:
        agent_id = agent.agent_card.agent_id
        if agent_id in agents:
            if origins[agent_id] == origin:
                return  # the same entry twice
            raise AgentLoadError(
                f"agent id {agent_id!r} is defined twice: by {origins[agent_id]} and by {origin}"
            )
        agents[agent_id] = agent
        origins[agent_id] = origin

    for spec in specs:
        if spec == ENTRYPOINTS:
            found = list((entry_points_of or _installed)(ENTRY_POINT_GROUP))
            if not found:
                log.warning(
                    "LOOM_WORKER_AGENTS has %r but no %r entry point is installed", spec, ENTRY_POINT_GROUP
                )
            for ep in found:
                origin = f"entry point {ep.name!r} ({ep.value})"
                add(_resolve(_load_entry_point(ep, origin), origin, provider), origin)
        elif ":" in spec:
            origin = repr(spec)
            add(_resolve(_import(spec), origin, provider), origin)
        elif spec in DEMO_AGENT_IDS:
            demo = demo if demo is not None else build_demo_agents(provider)
            add(demo[spec], f"demo agent {spec!r}")
        else:
            raise AgentLoadError(_unknown(spec))
    return agents


def _installed(group: str) -> Iterable[EntryPoint]:
    return entry_points(group=group)


def _unknown(spec: str) -> str:
    known = [*DEMO_AGENT_IDS, ENTRYPOINTS]
    close = difflib.get_close_matches(spec, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (
        f"LOOM_WORKER_AGENTS entry {spec!r} is not a demo agent ({', '.join(DEMO_AGENT_IDS)}), "
        f"not {ENTRYPOINTS!r} and not an import path package.module:attribute; {hint}"
        f"e.g. LOOM_WORKER_AGENTS=echo,mymodule:MyAgent"
    ).rstrip()


def _import(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise AgentLoadError(
            f"LOOM_WORKER_AGENTS entry {spec!r}: write an import path as package.module:attribute"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise AgentLoadError(
            f"LOOM_WORKER_AGENTS entry {spec!r}: cannot import {module_name!r} ({exc}); "
            "is it installed or on PYTHONPATH?"
        ) from None
    except Exception as exc:
        raise AgentLoadError(
            f"LOOM_WORKER_AGENTS entry {spec!r}: importing {module_name!r} raised {_brief(exc)}"
        ) from None
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise AgentLoadError(
                f"LOOM_WORKER_AGENTS entry {spec!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    return value


def _load_entry_point(ep: EntryPoint, origin: str) -> Any:
    try:
        return ep.load()
    except Exception as exc:
        raise AgentLoadError(
            f"{origin} of group {ENTRY_POINT_GROUP!r}: loading it raised {_brief(exc)}"
        ) from None


def _resolve(value: Any, origin: str, provider: LLMProvider) -> Agent:
    """An Agent from an instance, a subclass or a factory; the worker's provider bound where asked."""
    if isinstance(value, Agent):
        agent = value
    elif inspect.isclass(value):
        if not issubclass(value, Agent):
            raise AgentLoadError(
                f"{origin} is the class {value.__qualname__}, which is not a loom_agent_worker.Agent"
            )
        if inspect.isabstract(value):
            raise AgentLoadError(
                f"{origin} is the abstract class {value.__qualname__}: implement execute_task"
            )
        agent = _call(value, origin, provider)
    elif callable(value):
        made = _call(value, origin, provider)
        if not isinstance(made, Agent):
            raise AgentLoadError(
                f"{origin} is a factory that returned {_kind(made)}, not a loom_agent_worker.Agent"
            )
        agent = made
    else:
        raise AgentLoadError(
            f"{origin} is {_kind(value)}: "
            "name an Agent instance, an Agent subclass or a factory returning one"
        )
    card = getattr(agent, "agent_card", None)
    if card is None:
        raise AgentLoadError(f"{origin}: the agent has no agent_card (set self.agent_card = AgentCard(...))")
    return bind_worker_provider(agent, provider)


def _call(factory: Callable[..., Any], origin: str, provider: LLMProvider) -> Any:
    try:
        takes_provider = "provider" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins): call it bare
        takes_provider = False
    try:
        return factory(provider=provider) if takes_provider else factory()
    except Exception as exc:
        raise AgentLoadError(f"{origin}: constructing the agent raised {_brief(exc)}") from None


def _kind(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__} ({_short(repr(value))})"


def _brief(exc: BaseException) -> str:
    return _short(f"{type(exc).__name__}: {exc}")


def _short(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit] + "..."
