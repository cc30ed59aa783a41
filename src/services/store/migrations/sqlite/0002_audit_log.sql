-- One row per MCP tool call. Names, not foreign keys: the record outlives the user,
-- workspace or agent it names.
CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms        INTEGER NOT NULL,
    user_name    TEXT NOT NULL,
    -- owner/name, and the agent's name and node id, when the call reached a workspace.
    workspace    TEXT,
    agent        TEXT,
    agent_id     TEXT,
    tool         TEXT NOT NULL,
    args_bytes   INTEGER NOT NULL,
    result_bytes INTEGER NOT NULL,
    -- ok | error | refused | invalid | cancelled
    outcome      TEXT NOT NULL,
    detail       TEXT,
    duration_us  INTEGER NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_ms);
CREATE INDEX audit_log_user_at ON audit_log (user_name, at_ms);
CREATE INDEX audit_log_workspace_at ON audit_log (workspace, at_ms);
