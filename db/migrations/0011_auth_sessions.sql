-- A sign-in on one device. The session is also the refresh-token family: every refresh
-- token issued for it, rotated on each use, points here, and revoking the session ends
-- them all. Access tokens carry the session id (`sid`) and the API checks this row on every
-- request, so a revoked session stops working at once, not when its last token expires.
CREATE TABLE auth_sessions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    method        text NOT NULL CHECK (method IN ('wechat', 'password', 'dev')),
    device        text NOT NULL DEFAULT '',
    user_agent    text NOT NULL DEFAULT '',
    ip            inet,
    last_ip       inet,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    -- Moves forward with each refresh: a session nobody refreshes dies with its last token.
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoke_reason text CHECK (revoke_reason IN ('logout', 'deleted', 'refresh_reuse',
                                                'suspended', 'admin')),
    CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL))
);

-- "My devices" and "revoke everything of this user" look only at live sessions.
CREATE INDEX auth_sessions_user_live ON auth_sessions (user_id, created_at DESC)
    WHERE revoked_at IS NULL;

-- Refresh tokens are random and stored only as their SHA-256: a database leak gives nobody
-- a working token. A token is spent when used (used_at); presenting a spent one means a
-- copy exists somewhere, and the whole family (session) is revoked.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    session_id uuid NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    CHECK (expires_at > issued_at)
);

CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
