-- Each vehicle's MQTT login. The password is shown once, when it is made, and only its
-- argon2id hash is kept: the broker holds its own (PBKDF2) copy through the dynamic-security
-- plugin, so this table is the record of what was issued and whether the broker has it.
CREATE TABLE vehicle_credentials (
    vehicle_id         text PRIMARY KEY REFERENCES vehicles (id) ON DELETE CASCADE,
    username           text NOT NULL UNIQUE,
    password_hash      text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    rotated_at         timestamptz NOT NULL DEFAULT now(),
    -- The broker follows the database after each commit; these say whether it did.
    broker_provisioned boolean NOT NULL DEFAULT false,
    broker_error       text,
    broker_synced_at   timestamptz
);

-- The admins' vehicle list pages newest first with a keyset cursor on (created_at, id).
CREATE INDEX vehicles_created ON vehicles (created_at DESC, id DESC);

-- Photos of a vehicle. The original and its variants live in the file store under `key`
-- and `variants`; the row says what they are. Variants are made by the worker after the
-- upload commits, so a new image is `pending` until then.
CREATE TABLE vehicle_images (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vehicle_id   text NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    key          text NOT NULL UNIQUE,
    content_type text NOT NULL,
    width        integer NOT NULL CHECK (width > 0),
    height       integer NOT NULL CHECK (height > 0),
    size_bytes   integer NOT NULL CHECK (size_bytes > 0),
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready', 'failed')),
    -- {"thumb": {"key", "width", "height", "content_type"}, "large": {...}}
    variants     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX vehicle_images_vehicle ON vehicle_images (vehicle_id, created_at);
