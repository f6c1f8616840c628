-- Commands to vehicles. The row is the audit trail: every transition has its timestamp.
-- queued -> sent -> acked -> confirmed, or rejected | failed | expired.
CREATE TABLE vehicle_commands (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vehicle_id     text NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    action         text NOT NULL
                   CHECK (action IN ('lock', 'unlock', 'locate', 'honk', 'immobilize', 'mobilize')),
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'sent', 'acked', 'confirmed',
                                     'rejected', 'failed', 'expired')),
    issued_by      text NOT NULL,
    reason         text NOT NULL DEFAULT '',
    correlation_id text,
    expires_at     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    acked_at       timestamptz,
    confirmed_at   timestamptz,
    finished_at    timestamptz,
    -- The hub that claimed it, the key that signed it, and what the car said.
    sent_by        text,
    key_id         text,
    outcome_reason text,
    CHECK (expires_at > created_at)
);

-- Dispatchers look only at pending work; a partial index keeps that scan tiny.
CREATE INDEX vehicle_commands_pending ON vehicle_commands (created_at)
    WHERE status IN ('queued', 'sent', 'acked');
CREATE INDEX vehicle_commands_vehicle ON vehicle_commands (vehicle_id, created_at DESC);
