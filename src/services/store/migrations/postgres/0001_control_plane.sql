-- Users, workspaces, their shares and agents, and the tokens that stand for users and
-- agents. Times are unix milliseconds. Tokens are stored as SHA-256 digests only.
CREATE TABLE users (
    id            UUID PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    admin         BOOLEAN NOT NULL DEFAULT FALSE,
    -- argon2id PHC string; NULL: no password (token-only user).
    password_hash TEXT,
    created_ms    BIGINT NOT NULL
);

CREATE TABLE workspaces (
    id         UUID PRIMARY KEY,
    owner_id   UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE workspace_shares (
    workspace_id UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_shares_user ON workspace_shares (user_id);

CREATE TABLE agents (
    -- The agent's node id; its tailnet address derives from it.
    id           UUID PRIMARY KEY,
    workspace_id UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE tokens (
    id           UUID PRIMARY KEY,
    digest       BYTEA NOT NULL UNIQUE,
    user_id      UUID REFERENCES users (id) ON DELETE CASCADE,
    agent_id     UUID REFERENCES agents (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    -- Came from a control.toml import; the next import of that file keeps it in step.
    imported     BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms   BIGINT NOT NULL,
    expires_ms   BIGINT,
    last_used_ms BIGINT,
    revoked_ms   BIGINT,
    CHECK ((user_id IS NULL) <> (agent_id IS NULL))
);
CREATE INDEX tokens_user ON tokens (user_id);
CREATE INDEX tokens_agent ON tokens (agent_id);

-- Bumped by every write to the tables above, so every process holding a cache of them
-- (this one, another replica) can tell that it is stale.
CREATE TABLE control_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO control_version (id, version) VALUES (1, 0);
