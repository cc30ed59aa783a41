-- The OAuth authorization server's records (services::oauth): clients, pending browser
-- requests and sessions, codes, grants (token families) and their tokens. Times are
-- unix seconds (the protocol's own unit). Secrets are stored as SHA-256 digests only.
-- Users are named, not referenced: each use of a grant looks the user up again, so a
-- deleted user's grants simply stop working.
CREATE TABLE oauth_clients (
    client_id       TEXT PRIMARY KEY,
    -- 'registered' (RFC 7591) or 'metadata_document' (the id is the document's URL).
    source          TEXT NOT NULL,
    auth_method     TEXT NOT NULL,
    secret          BLOB,
    -- JSON array of exact redirect URIs.
    redirect_uris   TEXT NOT NULL,
    refresh_tokens  INTEGER NOT NULL,
    name            TEXT,
    client_uri      TEXT,
    metadata        TEXT NOT NULL,
    created_s       INTEGER NOT NULL,
    fetched_until_s INTEGER
);

CREATE TABLE oauth_pending (
    id                BLOB PRIMARY KEY,
    client_id         TEXT NOT NULL,
    redirect_uri      TEXT NOT NULL,
    redirect_explicit INTEGER NOT NULL,
    code_challenge    TEXT NOT NULL,
    scope             TEXT NOT NULL,
    resource          TEXT NOT NULL,
    state             TEXT,
    browser           BLOB NOT NULL,
    csrf              BLOB NOT NULL,
    expires_s         INTEGER NOT NULL
);

CREATE TABLE oauth_sessions (
    id        BLOB PRIMARY KEY,
    user_name TEXT NOT NULL,
    created_s INTEGER NOT NULL,
    expires_s INTEGER NOT NULL
);

CREATE TABLE oauth_grants (
    id                TEXT PRIMARY KEY,
    client_id         TEXT NOT NULL,
    user_name         TEXT NOT NULL,
    scope             TEXT NOT NULL,
    resource          TEXT NOT NULL,
    created_s         INTEGER NOT NULL,
    refreshed_s       INTEGER NOT NULL,
    -- The one refresh token valid now.
    refresh           BLOB,
    refresh_expires_s INTEGER NOT NULL,
    revoked_s         INTEGER,
    revoked_reason    TEXT
);
CREATE INDEX oauth_grants_user ON oauth_grants (user_name);
CREATE INDEX oauth_grants_client ON oauth_grants (client_id);

CREATE TABLE oauth_codes (
    digest            BLOB PRIMARY KEY,
    client_id         TEXT NOT NULL,
    redirect_uri      TEXT NOT NULL,
    redirect_explicit INTEGER NOT NULL,
    code_challenge    TEXT NOT NULL,
    scope             TEXT NOT NULL,
    resource          TEXT NOT NULL,
    user_name         TEXT NOT NULL,
    issued_s          INTEGER NOT NULL,
    expires_s         INTEGER NOT NULL,
    used              INTEGER NOT NULL DEFAULT 0,
    -- The grant the code's first use created (a reuse revokes it).
    grant_id          TEXT
);

CREATE TABLE oauth_access (
    digest    BLOB PRIMARY KEY,
    grant_id  TEXT NOT NULL REFERENCES oauth_grants (id) ON DELETE CASCADE,
    expires_s INTEGER NOT NULL
);
CREATE INDEX oauth_access_grant ON oauth_access (grant_id);

-- Every refresh token a grant has had, current and rotated away (presenting a rotated
-- one is reuse and revokes the grant).
CREATE TABLE oauth_refresh (
    digest   BLOB PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES oauth_grants (id) ON DELETE CASCADE
);
CREATE INDEX oauth_refresh_grant ON oauth_refresh (grant_id);
