"""The dispatcher's A2A server (protocol 1.0, JSON-RPC binding with SSE): every Loom agent is an
A2A agent at ``/a2a/<agentId>``. See docs/adr/0003-a2a.md."""

from .routes import router

__all__ = ["router"]
