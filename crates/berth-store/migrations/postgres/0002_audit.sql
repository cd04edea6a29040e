-- The audit log: append-only, each entry's hash covers the previous entry's hash and a canonical
-- encoding of the entry, so an edit, a deletion or a reordering breaks the chain.
CREATE TABLE audit_log (
    seq       BIGINT  PRIMARY KEY,
    at        BIGINT  NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    detail    TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);
