"""Which of two fixes of one vehicle is the newer: the unit's counter first, then its clock.

A unit's clock can be minutes off (the future filter lets `max_future_ms` through), so a
vehicle's state is not ordered by `ts` alone: a fix stamped four minutes ahead would hold
the state against every real fix of those four minutes. The unit's persisted `seq` cannot
be skewed that way, so it decides first:

- a higher `seq` is newer;
- a lower `seq` is newer only when its `ts` is later by more than `allowance` (the future
  filter's bound): no clock that far ahead gets past the filter, so that much later is real
  time moving on, and the unit's counter started again (a reset or a replaced unit);
- equal `seq`s, or a stored fix without one (a legacy row), compare `ts`.

The same rule orders `vehicle_state` in SQL (`vehicle_fix_is_newer`, migration 0061).
Times here are epoch milliseconds, as the filters keep them.
"""

from __future__ import annotations


def is_newer(seq: int, ts: int, *, than_seq: int | None, than_ts: int, allowance: int) -> bool:
    """Whether the fix (`seq`, `ts`) is newer than (`than_seq`, `than_ts`), by the rule above."""
    if than_seq is None or seq == than_seq:
        return ts > than_ts
    if seq > than_seq:
        return True
    return ts > than_ts + allowance
