"""Prometheus metrics of the query service (the default registry, served on /metrics)."""

from prometheus_client import Counter, Gauge

WS_CLIENTS = Gauge("loom_query_ws_clients", "Clients connected to /ws/events")
WS_DROPPED = Counter(
    "loom_query_ws_dropped_total", "Events not sent to a /ws/events client because its queue was full"
)
WS_SENT = Counter("loom_query_ws_sent_total", "Events sent to /ws/events clients")
LIVE_EVENTS = Counter("loom_query_live_events_total", "Events received from NATS for the live feed")
NATS_ERRORS = Counter("loom_query_nats_errors_total", "NATS client errors (e.g. slow consumer)", ["kind"])
