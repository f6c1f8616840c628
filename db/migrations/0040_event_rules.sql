-- What happens when the hub raises an event: rules per event kind, optionally per geofence.
-- The most specific rule decides: a rule naming the event's geofence, else the kind's rule
-- without a geofence. A disabled rule decides too (nothing happens), so an operator can
-- silence a kind for one fence; delete that rule to fall back to the kind's default.
--   channels  who is told: ops_email, ops_webhook, ops_sms, ops_push, rider (the worker)
--   command   what the hub commands the car to do (db.commands actions), or null
CREATE TABLE event_rules (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,63}$'),
    geofence_id bigint REFERENCES geofences (id) ON DELETE CASCADE,
    channels    text[] NOT NULL DEFAULT '{}'
                CHECK (channels <@ ARRAY['ops_email', 'ops_webhook', 'ops_sms', 'ops_push',
                                         'rider']::text[]),
    command     text CHECK (command IN ('lock', 'unlock', 'locate', 'honk', 'immobilize',
                                        'mobilize')),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One default rule per kind, and one rule per kind and fence.
CREATE UNIQUE INDEX event_rules_kind ON event_rules (kind) WHERE geofence_id IS NULL;
CREATE UNIQUE INDEX event_rules_kind_geofence ON event_rules (kind, geofence_id)
    WHERE geofence_id IS NOT NULL;
CREATE INDEX event_rules_geofence ON event_rules (geofence_id) WHERE geofence_id IS NOT NULL;

-- The defaults. A car moving while locked is a tow truck or a thief: tell ops and immobilize
-- it (the car refuses to while it is moving, and does so once it stands). The other alarms
-- and fleet conditions go to ops; routine kinds (fence crossings, online, idle, the engine
-- started without a trip) are recorded and sent to nobody.
INSERT INTO event_rules (kind, channels, command) VALUES
    ('moving_while_locked', '{ops_email,ops_webhook}', 'immobilize'),
    ('left_service_area', '{ops_email,ops_webhook}', NULL),
    ('entered_restricted', '{ops_email,ops_webhook}', NULL),
    ('door_open_while_locked', '{ops_email,ops_webhook}', NULL),
    ('low_fuel', '{ops_email,ops_webhook}', NULL),
    ('low_battery', '{ops_email,ops_webhook}', NULL),
    ('offline', '{ops_email,ops_webhook}', NULL),
    ('command_failed', '{ops_email,ops_webhook}', NULL),
    ('overspeed', '{ops_email,ops_webhook}', NULL),
    ('geofence_enter', '{}', NULL),
    ('geofence_exit', '{}', NULL),
    ('online', '{}', NULL),
    ('idle', '{}', NULL),
    ('engine_on_without_trip', '{}', NULL);

-- Each notification, per event, channel and target (an address, a URL, a phone): the worker
-- skips what was already sent, so a retried or redelivered task sends nothing twice.
CREATE TABLE notification_deliveries (
    event_id   bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    channel    text NOT NULL,
    target     text NOT NULL,
    status     text NOT NULL CHECK (status IN ('sent', 'retrying', 'failed')),
    attempts   integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error text,
    sent_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, channel, target)
);

-- The worker's sweep looks for events whose notifications are still due: this partial index
-- holds only those, so it stays small however many events are stored.
CREATE INDEX events_notification_due ON events (created_at) WHERE notify AND notified_at IS NULL;

-- Staff list a fence's events (GET /v1/admin/events?geofence_id=), and deleting a fence sets
-- its events' geofence_id to null: both would scan every event without this.
CREATE INDEX events_geofence_ts ON events (geofence_id, ts DESC) WHERE geofence_id IS NOT NULL;
