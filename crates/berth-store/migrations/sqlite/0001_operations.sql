-- Operations: every mutation the control plane hands to an agent. `seq` orders them (per
-- instance they run one at a time, in order); a claim is a lease (holder, expiry, generation).
CREATE TABLE operations (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    provider_id      TEXT    NOT NULL,
    instance_id      TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    lease_holder     TEXT,
    lease_expires_at INTEGER,
    generation       INTEGER NOT NULL DEFAULT 0,
    result           TEXT,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX operations_claimable ON operations (provider_id, status, seq);
CREATE INDEX operations_instance ON operations (instance_id, seq);
