"""In-process fan-out: the subscribers of each topic, and the counters about them.

Every broker delivers through one of these, whatever stores its history: the memory
broker directly from ``publish()``, a Redis broker from its reader task.
"""

from __future__ import annotations

from types import MappingProxyType

import trio

from ._subscription import CloseReason, Subscription

__all__ = ["LocalFanout"]


class LocalFanout:
    """The live subscriptions of one process, by topic.

    All methods are synchronous: a fan-out runs without a checkpoint, so two
    publishes can never interleave and every subscriber sees the same order.
    """

    __slots__ = ("_by_topic", "delivered", "dropped", "subscriber_count")

    def __init__(self) -> None:
        # Insertion-ordered dicts used as sets: removal is O(1) and iteration order is
        # stable, which keeps delivery order deterministic for tests.
        self._by_topic: dict[str, dict[Subscription, None]] = {}
        self.subscriber_count = 0
        self.delivered = 0
        self.dropped = 0

    def add(self, subscription: Subscription) -> None:
        self._by_topic.setdefault(subscription.topic, {})[subscription] = None
        self.subscriber_count += 1

    def remove(self, subscription: Subscription) -> None:
        """Unregister ``subscription`` and release its channel. Idempotent."""
        subscribers = self._by_topic.get(subscription.topic)
        if subscribers is not None and subscribers.pop(subscription, False) is None:
            self.subscriber_count -= 1
            if not subscribers:
                del self._by_topic[subscription.topic]
        subscription.discard()

    def has_subscribers(self, topic: str) -> bool:
        return topic in self._by_topic

    def topics(self) -> frozenset[str]:
        return frozenset(self._by_topic)

    def deliver(self, topic: str, frame: bytes) -> None:
        """Queue ``frame`` for every subscriber of ``topic``; drop the ones that are full."""
        subscribers = self._by_topic.get(topic)
        if not subscribers:
            return
        slow: list[Subscription] = []
        # One clock read for the whole fan-out: "when it was offered" for every subscriber.
        now = trio.current_time()
        for subscription in subscribers:
            if subscription.offer(frame, now):
                self.delivered += 1
            elif subscription.close_reason is CloseReason.SLOW_CONSUMER:
                slow.append(subscription)
        # A dropped subscriber stays registered until its stream task leaves the
        # subscribe() context, but it gets nothing more; count it once here.
        for subscription in slow:
            self.dropped += 1
            del subscribers[subscription]
            self.subscriber_count -= 1
        if not subscribers:
            del self._by_topic[topic]

    def close_all(self, reason: CloseReason) -> None:
        """End every subscription; each reader gets its queued frames, then EndOfChannel."""
        for subscribers in self._by_topic.values():
            for subscription in subscribers:
                subscription.close(reason)

    def per_topic(self) -> MappingProxyType[str, int]:
        return MappingProxyType({topic: len(subs) for topic, subs in self._by_topic.items()})
