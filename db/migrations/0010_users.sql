-- Everyone who signs in: riders (customers, from the WeChat mini-program) and staff (fleet
-- managers and admins, by email and password). One table, so a booking, an audit entry or a
-- suspension points at one kind of id whatever the role.
--
-- Emails are stored lower-cased (citext is a contrib extension the embedded PostgreSQL does
-- not ship), which makes the plain UNIQUE constraint case-insensitive.
CREATE TABLE users (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    role              text NOT NULL DEFAULT 'customer'
                      CHECK (role IN ('customer', 'fleet_manager', 'admin')),
    status            text NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'suspended')),
    -- WeChat identities: openid is per mini-program, unionid (when the mini-program is bound
    -- to an open-platform account) is shared by the operator's apps; kept for later linking.
    wechat_openid     text UNIQUE,
    wechat_unionid    text,
    email             text UNIQUE CHECK (email = lower(email)),
    -- argon2id, in the PHC string format; null for accounts that sign in through WeChat.
    password_hash     text,
    display_name      text,
    phone             text,
    -- {"name", "phone", "relationship"} and {"line1", "line2", "city", "province",
    -- "postal_code", "country"}: validated by the API, stored as documents because nothing
    -- queries inside them.
    emergency_contact jsonb,
    address           jsonb,
    preferences       jsonb NOT NULL DEFAULT '{}',
    suspended_at      timestamptz,
    suspended_reason  text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- Every account has a way in.
    CHECK (wechat_openid IS NOT NULL OR email IS NOT NULL),
    CHECK ((status = 'suspended') = (suspended_at IS NOT NULL))
);

CREATE INDEX users_wechat_unionid ON users (wechat_unionid) WHERE wechat_unionid IS NOT NULL;
-- The admins' user list pages newest first.
CREATE INDEX users_created ON users (created_at DESC, id DESC);
