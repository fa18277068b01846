"""Loom's NATS client parts, shared by the services: a continuous JetStream pull consumer, a
flush the server has really seen and a key-value bucket's current values."""

from .flush import flushed
from .kv import latest_values
from .puller import ConsumerGone, Puller

__all__ = ["ConsumerGone", "Puller", "flushed", "latest_values"]
