-- Current state of each task, folded from loom.task.> messages (submitted, assigned, status,
-- dead, cancel). A status that is not newer never overwrites a newer one, a terminal status
-- is never replaced by a non-terminal one, and the dispatcher's final word (final = true)
-- beats everything: see loom_task_wins.
CREATE TABLE tasks (
    task_id              text PRIMARY KEY,
    target_agent         text,
    source_agent         text,
    action               text,
    status               text,
    final                boolean     NOT NULL DEFAULT false,
    attempt              integer,
    instance_id          text,
    parent_task_id       text,
    session_id           text,
    trace_id             text,
    parameters           jsonb,
    result               jsonb,
    error                text,
    metadata             jsonb,
    created_at           timestamptz,
    updated_at           timestamptz NOT NULL,
    finished_at          timestamptz,
    cancel_requested_at  timestamptz
);

CREATE INDEX tasks_parent_idx ON tasks (parent_task_id) WHERE parent_task_id IS NOT NULL;
CREATE INDEX tasks_trace_idx ON tasks (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX tasks_session_idx ON tasks (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX tasks_updated_idx ON tasks (updated_at);

CREATE FUNCTION loom_is_terminal(status text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(status IN ('completed', 'failed', 'cancelled', 'dead'), false)
$$;

-- Does an incoming status (new_*) replace the stored one (cur_*)?
CREATE FUNCTION loom_task_wins(
    cur_final boolean, cur_status text, cur_updated timestamptz,
    new_final boolean, new_status text, new_updated timestamptz
) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN new_status IS NULL THEN false
        WHEN cur_status IS NULL THEN true
        WHEN new_final AND NOT cur_final THEN true
        WHEN cur_final AND NOT new_final THEN false
        WHEN loom_is_terminal(cur_status) AND NOT loom_is_terminal(new_status) THEN false
        WHEN loom_is_terminal(new_status) AND NOT loom_is_terminal(cur_status) THEN true
        ELSE new_updated >= cur_updated
    END
$$;
