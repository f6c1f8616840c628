"""Server side of MQTT: ingest, live state, geofences and events, command dispatch.

Ingest (`freecar hub`), one file per role:

- `settings`: `HubSettings`, the `FREECAR_*` variables of a hub process.
- `consumer`: the MQTT session (paho on one thread, persistent, manual acks, reconnects).
- `intake`: one message into the current batch: decode, filter, rows or a dead letter.
- `inventory`: which vehicles the hub takes messages from, kept fresh by NOTIFY.
- `filters`: which fixes are stored, and where (pure logic); `ordering`: which fix is newer.
- `batch`: what one transaction holds, and the hand-off from the MQTT thread to the writer.
- `steps`: a batch's transaction as one ordered list of steps (and the silence sweep's).
- `writer`: runs the steps, one transaction per batch, then acks, then fan-out.
- `repository`: every SQL statement of the hub, one module per thing it manages.
- `database`: every database connection the hub opens, with the same options.
- `fanout`: coalesced live state changes on Redis pub/sub (`LIVE_CHANNEL`).
- `stats`: the counters; `service`: `Hub`, all of it wired together; `cli`: the command.

The promises: a message is acknowledged to the broker only after the batch holding it has
committed, so a crash or a `kill -9` loses nothing (the persistent session redelivers) and
`INSERT ... ON CONFLICT DO NOTHING` on (vehicle_id, ts) turns redeliveries into one row. A
database outage pauses acknowledgements, not the process, and the broker's window of
unacknowledged messages bounds memory meanwhile, as batch limits in fixes and in bytes do
whatever the messages say. No message stops ingest: a malformed one, one of a vehicle not in
the inventory, one the database refuses or one a bug fails on becomes a dead letter, and a
bug in event detection costs events, not the batch. A vehicle's state only moves forward.
Nothing that changes lock, doors, engine or alarm is dropped by a filter.
"""
