-- A revision per vehicle state, so several hubs can share one fleet's event state.
--
-- Shared subscriptions give each hub some of a vehicle's messages, not all of them, while
-- each hub keeps the vehicle's geofence and condition state in memory. Every write of a
-- vehicle's state adds one to `rev` in the same transaction as the event state it moved;
-- a hub that finds a revision other than the one it last wrote knows another hub has moved
-- the vehicle on, and reloads that vehicle's state before using it (hub/events/pipeline.py).
-- Not indexed: the column changes on every batch and must keep updates HOT.
ALTER TABLE vehicle_state ADD COLUMN rev bigint NOT NULL DEFAULT 0;
