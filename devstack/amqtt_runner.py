"""Run amqtt's broker script with one fix: retained messages go only to their subscribers.

amqtt 0.12, when a client connects, walks every topic filter that any session in the
broker has subscribed (`Broker._handle_client_session`, "publish retained messages to a
pre-existing session's subscriptions") and sends the connecting client every retained
message that matches any of them: messages of topics it never subscribed to, at a cost of
filters x retained messages per CONNECT. Persistent sessions keep their filters after they
disconnect and every car retains its status, so both numbers only grow over a long test
session; late in `make test` on a Python-only machine, simulated cars timed out connecting.

The fix keeps what that step was meant for (a resumed session gets the retained messages
of its own filters) and drops the rest: a filter's retained messages are sent to a session
only if that session subscribed the filter. devstack runs `python -m devstack.amqtt_runner`
with the arguments of amqtt's own script.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from amqtt.broker import Broker
from amqtt.scripts.broker_script import main

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

_PATCHED = "_publish_retained_messages_for_subscription"
_replay: Callable[[Any, tuple[str, int], Any], Awaitable[None]] = getattr(Broker, _PATCHED)


async def _replay_to_subscribers_only(
    broker: Any,  # noqa: ANN401 - amqtt's Broker, untyped
    subscription: tuple[str, int],
    session: Any,  # noqa: ANN401 - amqtt's Session, untyped
) -> None:
    """Send `session` the retained messages of `subscription` if the session holds it."""
    subscribers = broker.subscriptions.get(subscription[0], ())
    if any(subscriber.client_id == session.client_id for subscriber, _qos in subscribers):
        await _replay(broker, subscription, session)


setattr(Broker, _PATCHED, _replay_to_subscribers_only)

if __name__ == "__main__":
    main()
