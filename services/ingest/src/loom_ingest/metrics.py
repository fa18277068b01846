"""Prometheus metrics of the ingest service (the default registry, served on /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

BATCH_SIZE = Histogram(
    "loom_ingest_batch_size",
    "Messages per batch written to TimescaleDB",
    ["stream"],
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
WRITE_SECONDS = Histogram(
    "loom_ingest_write_seconds",
    "Time to write and commit one batch",
    ["stream"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ROWS_WRITTEN = Counter("loom_ingest_rows_written_total", "Rows written to TimescaleDB", ["table"])
DUPLICATES = Counter(
    "loom_ingest_duplicates_total", "Event rows skipped because they were already stored (redeliveries)"
)
DEAD_LETTERS = Counter("loom_ingest_dead_letters_total", "Rows written to dead_letters", ["rejected_by"])
LAG_SECONDS = Gauge(
    "loom_ingest_lag_seconds",
    "Age of the newest message of the last committed batch (0 when caught up)",
    ["stream"],
)
PENDING = Gauge(
    "loom_ingest_pending_messages", "Messages in the stream not yet delivered to ingest", ["stream"]
)
DB_ERRORS = Counter("loom_ingest_db_errors_total", "Failed batch writes that will be retried", ["stream"])
WS_FRAMES = Counter("loom_ingest_ws_frames_total", "Frames received on /ws/ingest", ["outcome"])
WS_EVENTS = Counter("loom_ingest_ws_events_total", "Events received on /ws/ingest", ["outcome"])
HTTP_REQUESTS = Counter(
    "loom_ingest_http_requests_total", "Requests to the HTTP ingest endpoints", ["endpoint", "code"]
)
OTLP_SPANS = Counter("loom_ingest_otlp_spans_total", "Spans received on /v1/traces", ["outcome"])
HTTP_EVENTS = Counter("loom_ingest_http_events_total", "CloudEvents received on /api/events", ["outcome"])
