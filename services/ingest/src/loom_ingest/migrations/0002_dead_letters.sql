-- Messages that could not be stored as events: malformed ones ingest read from a stream
-- (rejected_by 'ingest') and the RejectedMessage records other services publish on
-- loom.rejected.<service> (rejected_by '<service>'). Idempotency: (time, stream, stream_seq)
-- names the JetStream message the row came from.
CREATE TABLE dead_letters (
    time         timestamptz NOT NULL,   -- JetStream timestamp of the message read
    stream       text        NOT NULL,
    stream_seq   bigint      NOT NULL,
    subject      text        NOT NULL,   -- the subject the bad message arrived on
    reason       text        NOT NULL,
    raw          bytea       NOT NULL,
    truncated    boolean     NOT NULL DEFAULT false,
    rejected_by  text        NOT NULL,
    rejected_at  timestamptz,            -- RejectedMessage.at
    ingested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (time, stream, stream_seq)
);

SELECT create_hypertable('dead_letters', by_range('time', INTERVAL '1 day'), create_default_indexes => false);

CREATE INDEX dead_letters_subject_idx ON dead_letters (subject, time DESC);
