"""The memory budget's policy, on plain data: which idle models to evict so that a load fits, whether a model
can never fit beside the pinned ones, which model to evict after a load left the process over the budget,
how many images of a batch fit beside the models and the batches running, and greedy-dual-size-frequency's
priorities. No ONNX Runtime, no threads, no clock: tests/service/test_budget.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# retired: no policy serves it; batches: room for the activations of a batch that could not run
EvictionReason = Literal["budget", "rss", "manual", "retired", "batches"]


@dataclass(frozen=True)
class Resident:
    """A model that holds memory now (loaded or loading), as the budget sees it."""

    name: str
    steady_bytes: int  # what it costs loaded: measured, else estimated
    load_bytes: int = 0  # what it costs while it loads (its peak); counted instead while `loading`
    loading: bool = False
    pinned: bool = False  # the default model or a preloaded one: never evicted
    in_flight: int = 0  # requests using or waiting for it
    busy: bool = False  # its batcher has work queued or running
    priority: float = 0.0  # greedy-dual-size-frequency's H: the lowest idle one goes first

    @property
    def counted_bytes(self) -> int:
        return self.load_bytes if self.loading else self.steady_bytes

    @property
    def evictable(self) -> bool:
        return not self.loading and not self.pinned and self.in_flight == 0 and not self.busy


@dataclass(frozen=True)
class Memory:
    """What the budget counts: the residents and the private sessions background calibration holds, what
    loads make room for; and the activations of the batches running now, which come on top of them
    (each batch is admitted within what the rest leaves, `admit_batch`; a load does not wait for running
    batches to end, they last milliseconds)."""

    budget: int
    residents: Sequence[Resident]
    reserved_bytes: int = 0
    batches_bytes: int = 0

    @property
    def models_bytes(self) -> int:
        """The residents alone."""
        return sum(r.counted_bytes for r in self.residents)

    @property
    def accounted(self) -> int:
        """The models and background calibration's sessions: what loads and evictions go by."""
        return self.models_bytes + self.reserved_bytes

    @property
    def with_batches(self) -> int:
        return self.accounted + self.batches_bytes

    def fits(self, need: int) -> bool:
        return self.accounted + need <= self.budget

    def victims(self, exclude: str | None = None) -> list[Resident]:
        """The evictable residents, lowest priority first (ties: in the residents' order)."""
        idle = [r for r in self.residents if r.evictable and r.name != exclude]
        return sorted(idle, key=lambda r: r.priority)

    def pinned_bytes(self, exclude: str) -> int:
        """Memory eviction can never free: the pinned models, loading ones at their steady figure."""
        return sum(r.steady_bytes for r in self.residents if r.pinned and r.name != exclude)

    def evictable(self, name: str) -> bool:
        return any(r.name == name for r in self.victims())


@dataclass(frozen=True)
class Evict:
    """Room is made by evicting these models, in this order (none when it fits already)."""

    victims: tuple[str, ...]


@dataclass(frozen=True)
class TooLarge:
    """The model's measured footprint exceeds what the budget leaves beside the pinned models: never fits."""

    measured: int
    room: int


@dataclass(frozen=True)
class NoRoomNow:
    """Even evicting every idle model would not make room: the rest is in use or pinned. Nothing is evicted,
    so that a small idle model is not unloaded for a load that cannot happen anyway."""


def room_for(
    memory: Memory, name: str, *, load_bytes: int, measured: int | None, headroom: int = 0
) -> Evict | TooLarge | NoRoomNow:
    """What to evict so that model `name`, not resident, can load: `load_bytes` while it loads, `measured`
    its steady figure where known. `headroom`: room for activations beside it (the batches running now and
    one image of its own), made where idle models allow, never a reason to refuse the load."""
    room = memory.budget - memory.pinned_bytes(exclude=name)  # what eviction can ever make free
    if measured is not None and measured > room:
        return TooLarge(measured, max(room, 0))
    need = min(load_bytes, max(room, 0))  # an estimate may be too high: try with what there is
    over = memory.accounted + need - memory.budget
    wanted = over + max(headroom, 0)
    if wanted <= 0:
        return Evict(())
    candidates = memory.victims(exclude=name)
    if sum(c.steady_bytes for c in candidates) < over:
        return NoRoomNow()
    chosen: list[str] = []
    for victim in candidates:
        if wanted <= 0:
            break
        chosen.append(victim.name)
        wanted -= victim.steady_bytes
    return Evict(tuple(chosen))


@dataclass(frozen=True)
class Eviction:
    victim: str
    reason: EvictionReason


@dataclass(frozen=True)
class Stuck:
    """Over the budget by `over` bytes, and the idle models would not make up for it: nothing is evicted."""

    reason: EvictionReason
    over: int


def next_eviction(memory: Memory, keep: str, rss_above_baseline: int | None) -> Eviction | Stuck | None:
    """After model `keep` loaded: one model to evict while the accounted memory, or else the process's RSS
    above its baseline (None: not known), exceeds the budget; None when within it. The caller evicts it,
    measures the RSS again and asks again."""
    reason: EvictionReason
    if memory.accounted > memory.budget:
        reason, over = "budget", memory.accounted - memory.budget
    elif rss_above_baseline is not None and rss_above_baseline > memory.budget:
        reason, over = "rss", rss_above_baseline - memory.budget
    else:
        return None
    candidates = memory.victims(exclude=keep)
    if sum(c.steady_bytes for c in candidates) < over:
        return Stuck(reason, over)
    return Eviction(candidates[0].name, reason)


@dataclass(frozen=True)
class Activations:
    """A model's activation memory while a batch runs: `fixed` plus `per_image` for each image."""

    fixed: int
    per_image: int

    def bytes_for(self, images: int) -> int:
        return self.fixed + self.per_image * images


@dataclass(frozen=True)
class RunBatch:
    """Run this many images of the batch now (the rest stays queued); `alone`: even one image overruns the
    budget, and no other batch runs whose end would make room, so it runs anyway."""

    images: int
    alone: bool = False


@dataclass(frozen=True)
class WaitForRoom:
    """Not one image fits beside the batches running now: wait until one ends (or models are evicted)."""


def admit_batch(room: int, activations: Activations, wanted: int, running: int) -> RunBatch | WaitForRoom:
    """How much of a batch of `wanted` images runs now, with `room` bytes left in the budget beside the
    models and the `running` batches: all of it when it fits, else the most images that fit, else a wait
    for a running batch to end; one image alone when nothing runs (it could wait forever otherwise)."""
    if activations.bytes_for(wanted) <= room:
        return RunBatch(wanted)
    if activations.per_image > 0 and room >= activations.bytes_for(1):
        return RunBatch(min(wanted, (room - activations.fixed) // activations.per_image))
    if running > 0:
        return WaitForRoom()
    return RunBatch(1, alone=activations.bytes_for(1) > room)


class GreedyDual:
    """Greedy-dual-size-frequency with a uniform cost: H = L + requests per MB. A small, often used model
    stays; a big one loaded for one request goes first. L rises to the priority of each model evicted, so a
    model unused for long ages out. Each miss counts alike: a load's time mostly follows the model's size,
    which the formula has already, and varies with the machine's load (docs/model-lifecycle.md)."""

    def __init__(self) -> None:
        self.clock = 0.0  # L

    def priority(self, hits: int, memory_bytes: int) -> float:
        return self.clock + hits / max(memory_bytes / 1e6, 0.001)

    def evicted(self, priority: float) -> None:
        self.clock = max(self.clock, priority)
