-- Messages the hub could not accept, kept byte for byte with the reason, so nothing a
-- vehicle said is lost and a bad unit can be diagnosed.
CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dead_letters_received_at ON dead_letters (received_at DESC);
