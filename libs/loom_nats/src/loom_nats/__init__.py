"""Loom's NATS client parts, shared by the services: a continuous JetStream pull consumer and a
flush the server has really seen."""

from .flush import flushed
from .puller import ConsumerGone, Puller

__all__ = ["ConsumerGone", "Puller", "flushed"]
