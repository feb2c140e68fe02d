"""A multi-tenant adapter pool for serving code: one base model, LoRA adapters attached with
PEFT on demand.

- Lazy: an adapter is attached the first time a request (or tenant) needs it.
- Warm: adapters of high-traffic tenants are preloaded and pinned (never evicted).
- One load per adapter: an ``asyncio.Lock`` per adapter makes concurrent cold requests wait
  for the same load instead of loading it again.
- Bounded: the weights held never exceed ``memory_budget_bytes``; the least recently used
  unpinned adapters are evicted (``delete_adapter``) to make room.
- Observable: Prometheus metrics for load time, hits, misses, evictions and bytes held.

``loader(name)`` returns the adapter's directory: typically the registry's ``open_version``,
which re-checks every file hash before anything is loaded.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

from lorawatch.errors import ConflictError


def adapter_bytes(directory: Path) -> int:
    """The memory an adapter's weights take, measured by its weight files."""
    return sum(p.stat().st_size for p in Path(directory).glob("adapter_model.*"))


class AdapterPool:
    """Attach, keep and evict LoRA adapters on one base model under a memory budget."""

    def __init__(
        self,
        model,
        loader: Callable[[str], Path | Awaitable[Path]],
        *,
        memory_budget_bytes: int,
        registry=None,
        attach: Callable | None = None,
        detach: Callable | None = None,
    ) -> None:
        # Deferred: prometheus_client is optional (the serving extra).
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        self.model = model  # a PeftModel, or a transformers model wrapped on the first attach
        self.loader = loader
        self.budget = memory_budget_bytes
        self._attach = attach or self._peft_attach
        self._detach = detach or self._peft_detach
        self.loaded: OrderedDict[str, int] = OrderedDict()  # name -> bytes, least recently used first
        self.pinned: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._evict_lock = asyncio.Lock()
        self.used = 0
        self.peak = 0
        registry = registry if registry is not None else REGISTRY
        self.m_load = Histogram(
            "lorawatch_pool_load_seconds", "Time to attach an adapter.", ["adapter_id"], registry=registry
        )
        self.m_hits = Counter(
            "lorawatch_pool_hits_total", "Requests whose adapter was attached.", ["adapter_id"], registry=registry
        )
        self.m_misses = Counter(
            "lorawatch_pool_misses_total",
            "Requests that had to attach their adapter.",
            ["adapter_id"],
            registry=registry,
        )
        self.m_evictions = Counter(
            "lorawatch_pool_evictions_total", "Adapters evicted to stay in budget.", ["adapter_id"], registry=registry
        )
        self.m_bytes = Gauge("lorawatch_pool_bytes", "Adapter weight bytes held.", registry=registry)

    async def warm(self, names: list[str]) -> None:
        """Preload and pin adapters of high-traffic tenants."""
        for name in names:
            await self.acquire(name)
            self.pinned.add(name)

    async def acquire(self, name: str):
        """Make sure ``name`` is attached (attaching it first if needed); returns the model."""
        if name in self.loaded:
            self.loaded.move_to_end(name)
            self.m_hits.labels(name).inc()
            return self.model
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name in self.loaded:  # another request attached it while this one waited
                self.loaded.move_to_end(name)
                self.m_hits.labels(name).inc()
                return self.model
            self.m_misses.labels(name).inc()
            directory = self.loader(name)
            if asyncio.iscoroutine(directory):
                directory = await directory
            size = adapter_bytes(directory)
            async with self._evict_lock:
                self._make_room(name, size)
                self.used += size  # reserved before loading, so concurrent loads cannot overshoot
                self.peak = max(self.peak, self.used)
            started = time.perf_counter()
            try:
                self.model = await asyncio.to_thread(self._attach, self.model, name, directory)
            except BaseException:
                self.used -= size
                raise
            self.m_load.labels(name).observe(time.perf_counter() - started)
            self.loaded[name] = size
            self.m_bytes.set(self.used)
            return self.model

    def _make_room(self, name: str, size: int) -> None:
        if size > self.budget:
            raise ConflictError(
                f"adapter {name} needs {size} bytes, more than the pool's budget of {self.budget}",
                fix="raise memory_budget_bytes",
            )
        while self.used + size > self.budget:
            victim = next((n for n in self.loaded if n not in self.pinned), None)
            if victim is None:
                raise ConflictError(
                    f"no room for adapter {name}: every held adapter is pinned",
                    fix="pin fewer adapters or raise memory_budget_bytes",
                )
            freed = self.loaded.pop(victim)
            self._detach(self.model, victim)
            self.used -= freed
            self.m_evictions.labels(victim).inc()
        self.m_bytes.set(self.used)

    @staticmethod
    def _peft_attach(model, name: str, directory: Path):
        """Attach with PEFT; a bare transformers model is wrapped in a PeftModel on first use."""
        # Deferred: torch and transformers take seconds to import; only model work needs them.
        from peft import PeftModel

        if isinstance(model, PeftModel):
            model.load_adapter(str(directory), adapter_name=name)
            return model
        return PeftModel.from_pretrained(model, str(directory), adapter_name=name)

    @staticmethod
    def _peft_detach(model, name: str) -> None:
        model.delete_adapter(name)
