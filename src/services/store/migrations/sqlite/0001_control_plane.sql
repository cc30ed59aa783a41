-- Users, workspaces, their shares and agents, and the tokens that stand for users and
-- agents. Times are unix milliseconds. Tokens are stored as SHA-256 digests only.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    admin         INTEGER NOT NULL DEFAULT 0,
    -- argon2id PHC string; NULL: no password (token-only user).
    password_hash TEXT,
    created_ms    INTEGER NOT NULL
);

CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY,
    owner_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE workspace_shares (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_shares_user ON workspace_shares (user_id);

CREATE TABLE agents (
    -- The agent's node id; its tailnet address derives from it.
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    digest       BLOB NOT NULL UNIQUE,
    user_id      TEXT REFERENCES users (id) ON DELETE CASCADE,
    agent_id     TEXT REFERENCES agents (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    -- Came from a control.toml import; the next import of that file keeps it in step.
    imported     INTEGER NOT NULL DEFAULT 0,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER,
    last_used_ms INTEGER,
    revoked_ms   INTEGER,
    CHECK ((user_id IS NULL) <> (agent_id IS NULL))
);
CREATE INDEX tokens_user ON tokens (user_id);
CREATE INDEX tokens_agent ON tokens (agent_id);

-- Bumped by every write to the tables above, so every process holding a cache of them
-- (this one, another replica) can tell that it is stale.
CREATE TABLE control_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO control_version (id, version) VALUES (1, 0);
