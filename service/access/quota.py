"""Quotas: token buckets per key (requests and images), a fair share of the queue per key, and a limit on
failed authentications per source address.

Every process that takes connections (each front, or the service alone) keeps its own buckets, each
holding its share of the key's rate: `share` processes split it, as they split CONVZOO_MAX_CONNECTIONS.
A shared bucket in the service process would cost a link round trip per request; the kernel spreads
connections evenly over the fronts, so a client with several connections gets its whole rate, one with a
single connection its front's share (docs/auth.md).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from service.access.keys import Key, Rate


class TokenBucket:
    """`rate` tokens a second, up to `capacity`; full at the start."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, n: float = 1.0) -> float:
        """0.0 when `n` tokens were taken; else the seconds until they would be there (nothing taken).
        More than the capacity is taken from a full bucket, leaving a debt: a large batch is not refused
        for ever."""
        now = time.monotonic()
        self._refill(now)
        need = min(n, self.capacity)
        if self.tokens >= need:
            self.tokens -= n
            return 0.0
        return (need - self.tokens) / self.rate

    def remaining(self) -> int:
        return max(0, int(self.tokens))


@dataclass
class KeyQuota:
    """One key's buckets in this process."""

    requests: TokenBucket
    images: TokenBucket | None
    window_s: float  # the policy's window, for the RateLimit-Policy header
    limit: int  # requests per window, in this process

    @classmethod
    def of(cls, rate: Rate, share: int) -> KeyQuota:
        per_s = rate.requests_per_s / share
        capacity = max(1.0, per_s * rate.burst_s)
        images = None
        if rate.images_per_s is not None:
            image_rate = rate.images_per_s / share
            images = TokenBucket(image_rate, max(1.0, image_rate * rate.burst_s))
        return cls(TokenBucket(per_s, capacity), images, rate.burst_s, max(1, math.floor(capacity)))

    def policy(self) -> str:
        """RateLimit-Policy (draft-ietf-httpapi-ratelimit-headers): the quota and its window."""
        return f'"requests";q={self.limit};w={max(1, math.ceil(self.window_s))}'

    def state(self, reset_s: float) -> str:
        """RateLimit: what is left now, and when it is back."""
        return f'"requests";r={self.requests.remaining()};t={max(0, math.ceil(reset_s))}'


@dataclass
class Quotas:
    """The quotas of every key in this process, and what each holds of the queue now."""

    share: int = 1  # the processes that split each key's rate
    queue_capacity: int = 256  # requests this process lets wait, shared fairly between the keys
    by_key: dict[str, KeyQuota] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)

    def quota(self, key: Key) -> KeyQuota | None:
        if key.rate is None:
            return None
        quota = self.by_key.get(key.id)
        if quota is None:
            quota = self.by_key[key.id] = KeyQuota.of(key.rate, self.share)
        return quota

    def reset(self) -> None:
        """After a reload of the keys: their rates may have changed."""
        self.by_key.clear()

    def fair_share(self, key_id: str) -> bool:
        """Whether `key_id` may have one more request in flight: each key with requests in flight may hold
        an equal part of the queue, so one client cannot take it all while others wait."""
        active = len(self.in_flight) + (key_id not in self.in_flight)
        return self.in_flight.get(key_id, 0) < max(1, self.queue_capacity // active)

    def enter(self, key_id: str) -> None:
        self.in_flight[key_id] = self.in_flight.get(key_id, 0) + 1

    def leave(self, key_id: str) -> None:
        left = self.in_flight.get(key_id, 0) - 1
        if left > 0:
            self.in_flight[key_id] = left
        else:
            self.in_flight.pop(key_id, None)


class FailureLimit:
    """Failed authentications per source address: `per_s` a second, with a burst of `burst`; the addresses
    kept are bounded (the least recently seen go first), so a scan cannot grow the table."""

    MAX_ADDRESSES = 4096

    def __init__(self, per_s: float, burst: float) -> None:
        self.per_s = per_s
        self.burst = burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def blocked_for(self, address: str) -> float:
        """Seconds until `address` may try again (0.0: it may now); checks without taking."""
        bucket = self._buckets.get(address)
        if bucket is None:
            return 0.0
        bucket._refill(time.monotonic())
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / bucket.rate

    def failed(self, address: str) -> None:
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(self.per_s, self.burst)
            if len(self._buckets) > self.MAX_ADDRESSES:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(address)
        bucket.take(1.0)
