-- Replicas share a PostgreSQL database; an SQLite store serves one process, so these
-- tables stay empty. They exist so both backends have the same schema history.
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    relay_url    TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
CREATE TABLE coord_peers (
    id         TEXT NOT NULL,
    replica    TEXT NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    principal  TEXT,
    instance   TEXT NOT NULL,
    node       TEXT,
    lost       INTEGER NOT NULL DEFAULT 0,
    bound_at   INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    changed_at INTEGER NOT NULL,
    PRIMARY KEY (id, replica)
);
CREATE TABLE coord_tunnels (
    src     TEXT NOT NULL,
    dst     TEXT NOT NULL,
    replica TEXT NOT NULL,
    PRIMARY KEY (src, dst, replica)
);
CREATE TABLE replica_settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
