-- The events hypertable: every CloudEvent from loom.event.> (kind 'event') and every task /
-- membership message from loom.task.> / loom.registry.member.> converted to a CloudEvent-shaped
-- row (kind 'task' / 'member'). Idempotency: the primary key (time, id); ingest inserts with
-- ON CONFLICT DO NOTHING, so a redelivered message never makes a second row.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE events (
    time            timestamptz      NOT NULL,  -- the event's time (JetStream's when it has none)
    id              text             NOT NULL,  -- CloudEvent id (bus rows: the Nats-Msg-Id)
    kind            text             NOT NULL,  -- 'event' | 'task' | 'member'
    type            text             NOT NULL,
    source          text             NOT NULL,
    subject         text,
    trace_id        text,
    task_id         text,
    session_id      text,
    parent_task_id  text,
    node_id         text             NOT NULL,  -- the agentid extension, else source
    agent_id        text,
    instance_id     text,
    seq             bigint,                     -- the seq extension (order within a task's events)
    input_tokens    bigint,                     -- llm.usage
    output_tokens   bigint,                     -- llm.usage
    cost_usd        double precision,           -- llm.usage
    latency_s       double precision,           -- llm.usage, tool.result, terminal task.* events
    data            jsonb,
    attributes      jsonb            NOT NULL,  -- the CloudEvent without data
    stream_seq      bigint,                     -- JetStream stream sequence it was read from
    ingested_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (time, id)
);

SELECT create_hypertable('events', by_range('time', INTERVAL '1 day'), create_default_indexes => false);

CREATE INDEX events_trace_idx ON events (trace_id, time DESC) WHERE trace_id IS NOT NULL;
CREATE INDEX events_task_idx ON events (task_id, time DESC) WHERE task_id IS NOT NULL;
CREATE INDEX events_session_idx ON events (session_id, time DESC) WHERE session_id IS NOT NULL;
CREATE INDEX events_node_idx ON events (node_id, time DESC);
CREATE INDEX events_type_idx ON events (type, time DESC);
