-- Who did what to which account, and when: sign-ins, refresh-token reuse, logouts, session
-- revocations, suspensions, profile changes. Admins read it as a user's history; it is
-- append-only (nothing updates or deletes a row but the account's own deletion).
CREATE TABLE user_audit (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Null when the user acted on their own account.
    actor_id   uuid REFERENCES users (id) ON DELETE SET NULL,
    action     text NOT NULL,
    details    jsonb NOT NULL DEFAULT '{}',
    ip         inet,
    -- The API request that did it, to find its log lines.
    request_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX user_audit_user ON user_audit (user_id, id DESC);
