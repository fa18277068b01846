-- Per-minute rollup of events for the metrics API. TimescaleDB's continuous aggregates are a
-- Timescale-License feature that the Apache build (Debian's postgresql-17-timescaledb) lacks,
-- so ingest maintains this rollup itself, in the same transaction as the event insert and
-- from the rows that insert actually added (RETURNING): exact, real-time, and idempotent
-- under redelivery.
--
-- Latency percentiles: latency_hist is a histogram of log10(latency_s) over
-- [loom_hist_lo, loom_hist_hi) in loom_hist_buckets equal buckets (1 ms .. 10^4 s, 20 per
-- decade, so a percentile is exact to within ~6 %), plus an underflow and an overflow cell,
-- as TimescaleDB's histogram() returns it. Histograms add up across rows (loom_hist_sum),
-- so any bucket width and grouping can be answered from the 1-minute rows.
CREATE FUNCTION loom_hist_lo() RETURNS double precision LANGUAGE sql IMMUTABLE AS 'SELECT -3.0::double precision';
CREATE FUNCTION loom_hist_hi() RETURNS double precision LANGUAGE sql IMMUTABLE AS 'SELECT 4.0::double precision';
CREATE FUNCTION loom_hist_buckets() RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT 140';

CREATE FUNCTION loom_hist_add(a integer[], b integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN a IS NULL THEN b
        WHEN b IS NULL THEN a
        ELSE (SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
              FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i))
    END
$$;

CREATE AGGREGATE loom_hist_sum(integer[]) (sfunc = loom_hist_add, stype = integer[]);

-- The q-quantile (0..1) of a histogram, interpolated geometrically inside its bucket.
CREATE FUNCTION loom_hist_quantile(hist integer[], q double precision) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    total bigint := 0;
    rank double precision;
    acc bigint := 0;
    n integer := loom_hist_buckets();
    width double precision := (loom_hist_hi() - loom_hist_lo()) / loom_hist_buckets();
    i integer;
    c integer;
BEGIN
    IF hist IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT sum(x) INTO total FROM unnest(hist) AS x;
    IF total IS NULL OR total = 0 THEN
        RETURN NULL;
    END IF;
    rank := greatest(least(q, 1.0), 0.0) * total;
    FOR i IN 1 .. array_length(hist, 1) LOOP
        c := coalesce(hist[i], 0);
        IF c > 0 AND acc + c >= rank THEN
            IF i = 1 THEN
                RETURN power(10.0, loom_hist_lo());
            ELSIF i = n + 2 THEN
                RETURN power(10.0, loom_hist_hi());
            END IF;
            RETURN power(10.0, loom_hist_lo() + width * ((i - 2) + greatest(rank - acc, 0) / c));
        END IF;
        acc := acc + c;
    END LOOP;
    RETURN power(10.0, loom_hist_hi());
END
$$;

CREATE TABLE event_metrics_1m (
    bucket         timestamptz      NOT NULL,
    agent          text             NOT NULL,  -- events.node_id
    type           text             NOT NULL,
    action         text             NOT NULL,  -- events.subject ('' when none): llm:<model>, tool:<name>, agent:<id>
    events         bigint           NOT NULL,
    input_tokens   bigint           NOT NULL DEFAULT 0,
    output_tokens  bigint           NOT NULL DEFAULT 0,
    cost_usd       double precision NOT NULL DEFAULT 0,
    latency_count  bigint           NOT NULL DEFAULT 0,
    latency_sum    double precision NOT NULL DEFAULT 0,
    latency_max    double precision,
    latency_hist   integer[],
    PRIMARY KEY (bucket, agent, type, action)
);

SELECT create_hypertable('event_metrics_1m', by_range('bucket', INTERVAL '7 days'), create_default_indexes => false);

CREATE INDEX event_metrics_agent_idx ON event_metrics_1m (agent, bucket DESC);
