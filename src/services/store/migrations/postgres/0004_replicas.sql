-- Replicas of `serve` sharing this database, and the coordinator state each holds.
-- Every replica writes only its own rows; times come from the database's clock, the one
-- clock all replicas share. No foreign keys or triggers: an expired replica's rows are
-- deleted by whichever replica notices first, in one short transaction.
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    -- Where other replicas reach this one's relay for the DERP mesh.
    relay_url    TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- One row per coordinator stream a replica holds. The same node id may appear under two
-- replicas for a moment (an agent moving); the newest binding on a live replica wins.
CREATE TABLE coord_peers (
    id         UUID NOT NULL,
    replica    TEXT NOT NULL,
    name       TEXT NOT NULL,
    -- agent | client | service
    role       TEXT NOT NULL,
    principal  TEXT,
    instance   TEXT NOT NULL,
    -- The node as JSON, once the peer sent one.
    node       TEXT,
    -- The stream ended without a goodbye; kept a minute so readers can tell `lost` from
    -- `disconnected`.
    lost       BOOLEAN NOT NULL DEFAULT FALSE,
    bound_at   TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    changed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (id, replica)
);
CREATE INDEX coord_peers_replica ON coord_peers (replica);

-- Tunnels, kept by the replica holding the source's stream.
CREATE TABLE coord_tunnels (
    src     UUID NOT NULL,
    dst     UUID NOT NULL,
    replica TEXT NOT NULL,
    PRIMARY KEY (src, dst, replica)
);
CREATE INDEX coord_tunnels_replica ON coord_tunnels (replica);

-- Values generated once and shared by every replica (the DERP mesh key).
CREATE TABLE replica_settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
