"""Per-engine KV memory: running calls' private tokens plus an LRU prefix cache.

KV capacity is counted in tokens. It holds (a) the private tokens of running calls (their context
beyond any shared cached prefix), (b) *pinned* cache entries in use as a running call's prefix, and
(c) *unpinned* cache entries: contexts of finished or preempted calls kept for reuse, evicted least
recently used first whenever (a)+(b)+(c) would exceed capacity (vLLM's free-block evictor).

Eviction trims the least recently used entry *from its tail*, only as many tokens as are needed:
vLLM V1 frees a request's blocks in reverse order (its last block becomes the first eviction
candidate) and evicts block by block, so a partly evicted context keeps its head, and a later
call can still reuse that head. Evicting whole entries would throw away more than vLLM does.

Entries are keyed by int: a program's context (its latest/longest finished call) or a preempted
call's own tokens. The simulator decides what is reusable; this class only does the accounting.
"""

from __future__ import annotations

from collections import OrderedDict


class KVCache:
    __slots__ = ("capacity", "evicted", "free_lru", "lru_sum", "pinned", "pinned_sum", "private")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.private = 0  # running calls' private tokens
        self.free_lru: OrderedDict[int, int] = OrderedDict()  # unpinned entries: key -> tokens
        self.lru_sum = 0
        self.pinned: dict[int, list[int]] = {}  # key -> [tokens, refcount]
        self.pinned_sum = 0
        self.evicted = 0  # tokens evicted so far

    def lookup(self, key: int) -> int:
        p = self.pinned.get(key)
        if p is not None:
            return p[0]
        return self.free_lru.get(key, 0)

    def unpinned_tokens(self, key: int) -> int:
        """Tokens that pinning `key` moves from evictable to held (0 if pinned or absent)."""
        return self.free_lru.get(key, 0)

    def pin(self, key: int) -> None:
        p = self.pinned.get(key)
        if p is not None:
            p[1] += 1
            return
        t = self.free_lru.pop(key)
        self.lru_sum -= t
        self.pinned[key] = [t, 1]
        self.pinned_sum += t

    def unpin(self, key: int, tokens: int = 0) -> None:
        """Release one use of a pinned entry, growing it to `tokens` if larger."""
        p = self.pinned[key]
        if tokens > p[0]:
            self.pinned_sum += tokens - p[0]
            p[0] = tokens
        p[1] -= 1
        if p[1] == 0:
            del self.pinned[key]
            self.pinned_sum -= p[0]
            self.free_lru[key] = p[0]
            self.lru_sum += p[0]

    def put(self, key: int, tokens: int) -> None:
        """Store (or grow) an entry as most recently used."""
        p = self.pinned.get(key)
        if p is not None:
            if tokens > p[0]:
                self.pinned_sum += tokens - p[0]
                p[0] = tokens
            return
        old = self.free_lru.pop(key, 0)
        t = max(old, tokens)
        self.free_lru[key] = t
        self.lru_sum += t - old
        self.evict()

    def take(self, key: int) -> int:
        """Remove an unpinned entry and return its tokens (0 if absent)."""
        t = self.free_lru.pop(key, 0)
        self.lru_sum -= t
        return t

    def held(self) -> int:
        """Tokens that cannot be evicted: private + pinned."""
        return self.private + self.pinned_sum

    def evict(self) -> None:
        """Trim least recently used unpinned entries, tail first, until everything fits."""
        over = self.private + self.pinned_sum + self.lru_sum - self.capacity
        lru = self.free_lru
        while over > 0 and lru:
            key = next(iter(lru))
            t = lru[key]
            if t <= over:
                del lru[key]
                cut = t
            else:
                lru[key] = t - over  # assigning an existing key keeps its LRU position
                cut = over
            self.lru_sum -= cut
            self.evicted += cut
            over -= cut
