"""Server side of MQTT: ingest, live state, geofences and events, command dispatch.

Ingest (`freecar hub`), one file per role:

- `settings`: `HubSettings`, the `FREECAR_*` variables of a hub process.
- `consumer`: the MQTT session (paho on one thread, persistent, manual acks, reconnects).
- `intake`: one message into the current batch: decode, filter, rows or a dead letter.
- `filters`: which fixes are stored, and where (pure logic).
- `batch`: what one transaction holds, and the hand-off from the MQTT thread to the writer.
- `writer`: one transaction per batch, then acks, then fan-out; the silence sweep.
- `repository`: every SQL statement of the hub.
- `fanout`: coalesced live state changes on Redis pub/sub (`LIVE_CHANNEL`).
- `stats`: the counters; `service`: `Hub`, all of it wired together; `cli`: the command.

The promises: a message is acknowledged to the broker only after the batch holding it has
committed, so a crash or a `kill -9` loses nothing (the persistent session redelivers) and
`INSERT ... ON CONFLICT DO NOTHING` on (vehicle_id, ts) turns redeliveries into one row. A
database outage pauses acknowledgements, not the process, and the broker's window of
unacknowledged messages bounds memory meanwhile. A malformed message becomes a dead letter
and never stops ingest. A vehicle's state only moves forward. Nothing that changes lock,
doors, engine or alarm is dropped by a filter.
"""
