-- Task search (the query service's GET /api/tasks and GET /api/sessions/{id}): every task has a
-- creation time to order and filter by, the projection keeps the tool call an input_required
-- task waits on and the approval decisions taken, and indexes serve the filters, the keyset
-- pages (created_at DESC, task_id DESC) and the counts by status.

-- A task whose submission ingest never saw (only status or cancel messages) is dated by the
-- first message of it that ingest stored; its submission, if it comes later, moves the date
-- back (ingest keeps the earliest).
UPDATE tasks SET created_at = updated_at WHERE created_at IS NULL;
ALTER TABLE tasks
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN created_at SET NOT NULL;

-- the ApprovalRequest an input_required task waits on (null in any other status), and the
-- ApprovalDecisions taken on the task's tool calls, oldest first (from its task messages)
ALTER TABLE tasks
    ADD COLUMN pending_approval jsonb,
    ADD COLUMN approvals jsonb;

CREATE INDEX tasks_created_idx ON tasks (created_at DESC, task_id DESC);
CREATE INDEX tasks_status_created_idx ON tasks (status, created_at DESC, task_id DESC);
CREATE INDEX tasks_agent_created_idx ON tasks (target_agent, created_at DESC, task_id DESC);

DROP INDEX tasks_session_idx;
CREATE INDEX tasks_session_idx ON tasks (session_id, created_at DESC, task_id DESC)
    WHERE session_id IS NOT NULL;
DROP INDEX tasks_parent_idx;
CREATE INDEX tasks_parent_idx ON tasks (parent_task_id, created_at DESC, task_id DESC)
    WHERE parent_task_id IS NOT NULL;

-- What the free-text search (q) looks in: parameters and result as JSON text, and error,
-- lower-cased once when written, so that a search is a plain LIKE on lower(pattern) (ILIKE,
-- which folds case row by row, costs about three times as much on a scan). It lives in a
-- table of its own that ingest rewrites only when the text changes (a submission, an outcome):
-- status changes that carry no text (dispatched, running...) leave it, and its trigram index,
-- untouched. Rows go with their task (retention deletes tasks).
CREATE FUNCTION loom_task_text(parameters jsonb, result jsonb, error text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT lower(coalesce(parameters::text, '') || ' ' || coalesce(result::text, '') || ' ' || coalesce(error, ''))
$$;

CREATE TABLE task_text (
    task_id      text PRIMARY KEY REFERENCES tasks (task_id) ON DELETE CASCADE,
    search_text  text NOT NULL
);
INSERT INTO task_text (task_id, search_text)
SELECT task_id, loom_task_text(parameters, result, error) FROM tasks;

-- A trigram index makes LIKE '%q%' an index search (q of 3 characters or more). pg_trgm ships
-- with PostgreSQL (contrib, in Debian's postgresql-17 package) and is a trusted extension;
-- where it cannot be installed the search still works, scanning the text of every task.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS pg_trgm;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'pg_trgm not installed (%): free-text task search scans', SQLERRM;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        EXECUTE 'CREATE INDEX task_text_trgm_idx ON task_text USING gin (search_text gin_trgm_ops)';
    END IF;
END
$$;
