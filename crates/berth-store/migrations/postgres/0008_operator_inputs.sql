-- What a person submitted for an operation that waits on them (the manual backend's
-- waiting_for_operator stage), until the agent running it has taken it. A root password in it
-- is already sealed to the requester's age key.
CREATE TABLE operator_inputs (
    operation_id TEXT   PRIMARY KEY REFERENCES operations (id),
    action       TEXT   NOT NULL CHECK (action IN ('complete', 'fail', 'cancel')),
    body         TEXT   NOT NULL,
    submitted_by TEXT   NOT NULL,
    submitted_at BIGINT NOT NULL,
    taken_at     BIGINT,
    error        TEXT
);
