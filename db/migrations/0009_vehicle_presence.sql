-- Online/offline evidence reaches the hubs out of order: several hubs share the load, a hub
-- drains a backlog after a restart, a retained status is replayed to a new subscriber. Each
-- piece of evidence has a time (a status message's, a telemetry message's arrival, the
-- silence sweep's), and only evidence newer than presence_at may change `online`, so the
-- newest evidence wins whatever order it is applied in. online_changed_at stays the time
-- `online` last actually flipped.
ALTER TABLE vehicle_state ADD COLUMN presence_at timestamptz;

-- The silence sweep looks only at vehicles still marked online.
CREATE INDEX vehicle_state_online_last_seen ON vehicle_state (last_seen_at) WHERE online;
