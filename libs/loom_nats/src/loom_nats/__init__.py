"""Loom's JetStream client parts, shared by the services that consume the task and event streams."""

from .puller import ConsumerGone, Puller

__all__ = ["ConsumerGone", "Puller"]
