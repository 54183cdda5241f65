"""The memory budget's eviction policy on plain data (service/models/budget.py): no ONNX Runtime, no threads,
no clock. The same policy under real loads is tested in test_lifecycle.py and test_manager.py."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from service.models.budget import (
    Activations,
    Evict,
    Eviction,
    GreedyDual,
    Memory,
    NoRoomNow,
    Resident,
    RunBatch,
    Stuck,
    TooLarge,
    WaitForRoom,
    admit_batch,
    next_eviction,
    room_for,
)

MB = 1_000_000


def idle(name: str, mb: int, priority: float) -> Resident:
    return Resident(name, steady_bytes=mb * MB, priority=priority)


def memory(budget_mb: int, *residents: Resident, reserved_mb: int = 0) -> Memory:
    return Memory(budget_mb * MB, residents, reserved_mb * MB)


def room(mem: Memory, load_mb: int, measured_mb: int | None = None) -> Evict | TooLarge | NoRoomNow:
    measured = None if measured_mb is None else measured_mb * MB
    return room_for(mem, "incoming", load_bytes=load_mb * MB, measured=measured)


# ---- making room for a load ------------------------------------------------------------------------------


def test_nothing_is_evicted_when_the_load_fits() -> None:
    assert room(memory(100, idle("a", 30, 1.0)), load_mb=70) == Evict(())


def test_the_lowest_priority_goes_first_and_only_as_many_as_needed() -> None:
    mem = memory(100, idle("hot", 30, 5.0), idle("cold", 30, 1.0), idle("warm", 30, 2.0))
    assert room(mem, load_mb=20) == Evict(("cold",))
    assert room(mem, load_mb=50) == Evict(("cold", "warm"))
    assert room(mem, load_mb=100) == Evict(("cold", "warm", "hot"))


def test_ties_go_in_the_residents_order() -> None:
    mem = memory(100, idle("first", 40, 1.0), idle("second", 40, 1.0))
    assert room(mem, load_mb=30) == Evict(("first",))


def test_a_model_with_requests_in_flight_is_never_evicted() -> None:
    used = Resident("used", steady_bytes=40 * MB, priority=0.1, in_flight=1)
    mem = memory(100, used, idle("other", 40, 9.0))
    assert room(mem, load_mb=30) == Evict(("other",))


def test_a_model_whose_batcher_is_busy_is_never_evicted() -> None:
    busy = Resident("busy", steady_bytes=40 * MB, priority=0.1, busy=True)
    assert room(memory(100, busy, idle("other", 40, 9.0)), load_mb=30) == Evict(("other",))


def test_pinned_and_loading_models_are_never_evicted() -> None:
    default = Resident("default", steady_bytes=30 * MB, priority=0.0, pinned=True)
    loading = Resident("loading", steady_bytes=10 * MB, load_bytes=30 * MB, loading=True)
    mem = memory(100, default, loading, idle("a", 20, 5.0))
    assert room(mem, load_mb=30) == Evict(("a",))


def test_when_the_idle_models_would_not_make_room_nothing_is_evicted() -> None:
    used = Resident("used", steady_bytes=60 * MB, in_flight=2)
    mem = memory(100, used, idle("small", 10, 0.0))
    assert room(mem, load_mb=40) == Evict(("small",))
    assert room(mem, load_mb=50) == NoRoomNow()  # evicting "small" would leave 70 + 50 > 100


def test_a_loading_model_counts_at_its_load_peak_and_reservations_count() -> None:
    loading = Resident("loading", steady_bytes=10 * MB, load_bytes=40 * MB, loading=True)
    mem = memory(100, loading, idle("a", 20, 1.0), reserved_mb=20)
    assert mem.accounted == 80 * MB
    assert room(mem, load_mb=20) == Evict(())
    assert room(mem, load_mb=30) == Evict(("a",))
    assert room(mem, load_mb=41) == NoRoomNow()


def test_a_measured_model_larger_than_the_whole_budget_is_refused() -> None:
    assert room(memory(100), load_mb=300, measured_mb=101) == TooLarge(101 * MB, 100 * MB)


def test_a_measured_model_larger_than_the_room_beside_the_pinned_ones_is_refused() -> None:
    default = Resident("default", steady_bytes=30 * MB, pinned=True)
    preload = Resident("preload", steady_bytes=20 * MB, load_bytes=60 * MB, loading=True, pinned=True)
    mem = memory(100, default, preload, idle("a", 40, 1.0))
    # The pinned models count at their steady figure, the loading one too: 50 MB can never be freed.
    assert room(mem, load_mb=60, measured_mb=51) == TooLarge(51 * MB, 50 * MB)
    assert room(mem, load_mb=50, measured_mb=50) == NoRoomNow()  # fits once the preload's peak is over


def test_a_pinned_incoming_model_is_not_counted_against_itself() -> None:
    itself = Resident("incoming", steady_bytes=60 * MB, pinned=True)
    assert room(memory(100, itself), load_mb=0, measured_mb=90) == Evict(())


def test_an_estimate_larger_than_the_room_is_tried_with_all_there_is() -> None:
    # Not measured yet: the estimate may be too high, so the idle models are evicted and the load tried.
    default = Resident("default", steady_bytes=30 * MB, pinned=True)
    mem = memory(100, default, idle("a", 20, 2.0), idle("b", 20, 1.0))
    assert room(mem, load_mb=500) == Evict(("b", "a"))


# ---- after a load ------------------------------------------------------------------------------------------


def test_within_the_budget_nothing_is_evicted() -> None:
    mem = memory(100, idle("a", 50, 1.0), idle("new", 50, 0.0))
    assert next_eviction(mem, keep="new", rss_above_baseline=100 * MB) is None


def test_over_the_accounted_budget_the_lowest_idle_priority_goes_but_never_the_new_model() -> None:
    mem = memory(100, idle("a", 40, 2.0), idle("b", 40, 3.0), idle("new", 40, 0.5))
    assert next_eviction(mem, keep="new", rss_above_baseline=None) == Eviction("a", "budget")


def test_over_in_resident_memory_only_evicts_for_rss() -> None:
    mem = memory(100, idle("a", 40, 2.0), idle("new", 40, 0.5))
    assert next_eviction(mem, keep="new", rss_above_baseline=130 * MB) == Eviction("a", "rss")
    assert next_eviction(mem, keep="new", rss_above_baseline=None) is None  # no baseline measured


def test_over_the_budget_with_too_little_idle_nothing_is_evicted() -> None:
    used = Resident("used", steady_bytes=80 * MB, in_flight=1)
    mem = memory(100, used, idle("small", 10, 1.0), idle("new", 40, 0.5))
    assert next_eviction(mem, keep="new", rss_above_baseline=None) == Stuck("budget", 30 * MB)


def test_manual_unloading_takes_only_idle_unpinned_loaded_models() -> None:
    mem = memory(
        100,
        idle("a", 10, 1.0),
        Resident("pinned", steady_bytes=MB, pinned=True),
        Resident("used", steady_bytes=MB, in_flight=1),
        Resident("loading", steady_bytes=MB, loading=True),
    )
    assert [n for n in ("a", "pinned", "used", "loading", "absent") if mem.evictable(n)] == ["a"]


# ---- greedy-dual-size-frequency ------------------------------------------------------------------------


def test_a_small_often_used_model_outranks_a_big_one_used_once() -> None:
    gdsf = GreedyDual()
    assert gdsf.priority(hits=10, memory_bytes=1 * MB) > gdsf.priority(hits=1, memory_bytes=50 * MB)


def test_among_equal_models_the_least_recently_used_goes_first() -> None:
    gdsf = GreedyDual()
    earlier = gdsf.priority(hits=3, memory_bytes=10 * MB)
    gdsf.evicted(gdsf.priority(hits=1, memory_bytes=10 * MB))  # L rises with every eviction
    later = gdsf.priority(hits=3, memory_bytes=10 * MB)
    mem = memory(100, idle("earlier", 50, earlier), idle("later", 50, later))
    assert earlier < later and room(mem, load_mb=10) == Evict(("earlier",))


def test_the_clock_never_goes_back() -> None:
    gdsf = GreedyDual()
    gdsf.evicted(5.0)
    gdsf.evicted(2.0)
    assert gdsf.clock == 5.0
    assert gdsf.priority(hits=0, memory_bytes=0) == 5.0  # a 0-byte model divides by 1 kB, not by 0


# ---- invariants ----------------------------------------------------------------------------------------


@st.composite
def memories(draw: st.DrawFn) -> Memory:
    names = draw(st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8))
    residents = []
    for name in names:
        steady = draw(st.integers(0, 400))
        residents.append(
            Resident(
                name,
                steady_bytes=steady,
                load_bytes=draw(st.integers(steady, 3 * steady + 10)),
                loading=draw(st.booleans()),
                pinned=draw(st.booleans()),
                in_flight=draw(st.sampled_from([0, 0, 1])),
                busy=draw(st.booleans()),
                priority=draw(st.sampled_from([0.0, 0.5, 1.0, 2.0])),  # ties are common
            )
        )
    return Memory(draw(st.integers(0, 1500)), residents, draw(st.integers(0, 100)))


def _freed(mem: Memory, victims: tuple[str, ...]) -> int:
    return sum(r.steady_bytes for r in mem.residents if r.name in victims)


@given(memories(), st.integers(0, 1000), st.none() | st.integers(0, 1000))
def test_after_room_is_made_the_load_fits_or_nothing_is_evicted(
    mem: Memory, load_bytes: int, measured: int | None
) -> None:
    decision = room_for(mem, "z", load_bytes=load_bytes, measured=measured)
    room_left = mem.budget - mem.pinned_bytes(exclude="z")
    need = min(load_bytes, max(room_left, 0))
    if isinstance(decision, TooLarge):
        assert measured is not None and measured > room_left
    elif isinstance(decision, NoRoomNow):
        assert mem.accounted - _freed(mem, tuple(r.name for r in mem.victims())) + need > mem.budget
    else:
        victims = decision.victims
        assert mem.accounted - _freed(mem, victims) + need <= mem.budget
        ranked = [r.name for r in mem.victims()]
        assert list(victims) == ranked[: len(victims)]  # idle ones only, lowest priority first
        if victims:  # no more than needed
            assert mem.accounted - _freed(mem, victims[:-1]) + need > mem.budget


@given(memories(), st.none() | st.integers(0, 2000))
def test_evicting_after_a_load_ends_within_the_budget_or_stuck(mem: Memory, rss: int | None) -> None:
    keep = mem.residents[0].name if mem.residents else "z"
    residents = list(mem.residents)
    evicted: list[str] = []
    while True:
        now = Memory(mem.budget, residents, mem.reserved_bytes)
        decision = next_eviction(now, keep, None)
        if decision is None:
            assert now.accounted <= mem.budget
            break
        if isinstance(decision, Stuck):
            assert sum(r.steady_bytes for r in now.victims(exclude=keep)) < decision.over
            break
        victim = next(r for r in residents if r.name == decision.victim)
        assert victim.evictable and victim.name != keep and victim.name not in evicted
        evicted.append(victim.name)
        residents.remove(victim)
    if rss is not None and rss > mem.budget:  # one step for RSS: only an idle model that is not `keep`
        decision = next_eviction(Memory(mem.budget, residents, mem.reserved_bytes), keep, rss)
        assert decision is not None
        if isinstance(decision, Eviction):
            assert decision.reason == "rss"
            assert any(r.name == decision.victim and r.evictable and r.name != keep for r in residents)


def test_the_policy_needs_no_onnx_runtime() -> None:
    code = "import sys, service.models.budget; assert 'onnxruntime' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- the activations of running batches ----------------------------------------------------------------

ACTS = Activations(fixed=2 * MB, per_image=10 * MB)


def test_a_batch_that_fits_runs_whole() -> None:
    assert admit_batch(room=100 * MB, activations=ACTS, wanted=8, running=0) == RunBatch(8)


def test_a_batch_that_does_not_fit_is_cut_to_the_images_that_do() -> None:
    # 2 + 10 per image in 45 MB: 4 images (42 MB)
    assert admit_batch(room=45 * MB, activations=ACTS, wanted=8, running=1) == RunBatch(4)


def test_not_one_image_fits_beside_running_batches_it_waits() -> None:
    assert admit_batch(room=11 * MB, activations=ACTS, wanted=8, running=2) == WaitForRoom()


def test_not_one_image_fits_and_nothing_runs_one_image_runs_alone() -> None:
    # nothing running will free memory: waiting could last forever
    assert admit_batch(room=0, activations=ACTS, wanted=8, running=0) == RunBatch(1, alone=True)
    assert admit_batch(room=-50 * MB, activations=ACTS, wanted=1, running=0) == RunBatch(1, alone=True)


def test_a_model_with_only_a_fixed_part_runs_whole_or_waits() -> None:
    fixed = Activations(fixed=20 * MB, per_image=0)
    assert admit_batch(room=20 * MB, activations=fixed, wanted=32, running=3) == RunBatch(32)
    assert admit_batch(room=19 * MB, activations=fixed, wanted=32, running=3) == WaitForRoom()


@given(
    room=st.integers(-100, 1000),
    fixed=st.integers(0, 50),
    per_image=st.integers(0, 50),
    wanted=st.integers(1, 64),
    running=st.integers(0, 4),
)
def test_an_admitted_batch_fits_unless_it_runs_alone(
    room: int, fixed: int, per_image: int, wanted: int, running: int
) -> None:
    acts = Activations(fixed * MB, per_image * MB)
    decision = admit_batch(room * MB, acts, wanted, running)
    if isinstance(decision, WaitForRoom):
        assert running > 0 and acts.bytes_for(1) > room * MB
        return
    assert 1 <= decision.images <= wanted
    if decision.alone:
        assert running == 0 and decision.images == 1 and acts.bytes_for(1) > room * MB
    else:
        assert acts.bytes_for(decision.images) <= room * MB
        # the most that fit: one more image would not (or the whole batch runs)
        assert decision.images == wanted or acts.bytes_for(decision.images + 1) > room * MB


def test_running_batches_come_on_top_of_what_loads_make_room_for() -> None:
    # a running batch ends within milliseconds: a load does not evict for it, new batches wait instead
    mem = Memory(100 * MB, [idle("a", 40, 1.0), idle("b", 30, 2.0)], batches_bytes=20 * MB)
    assert mem.models_bytes == 70 * MB and mem.accounted == 70 * MB and mem.with_batches == 90 * MB
    assert room_for(mem, "incoming", load_bytes=20 * MB, measured=None) == Evict(())


def test_a_load_makes_headroom_for_activations_where_idle_models_allow() -> None:
    mem = memory(100, idle("cold", 30, 1.0), idle("warm", 30, 2.0))
    assert room(mem, load_mb=40) == Evict(())
    assert room_for(mem, "incoming", load_bytes=40 * MB, measured=None, headroom=5 * MB) == Evict(("cold",))


def test_headroom_never_refuses_a_load() -> None:
    pinned = Resident("default", steady_bytes=30 * MB, pinned=True)
    mem = memory(100, pinned, idle("cold", 30, 1.0))
    # 40 MB fit once "cold" goes; the 50 MB of headroom cannot be made, and the load goes ahead
    assert room_for(mem, "incoming", load_bytes=40 * MB, measured=None, headroom=50 * MB) == Evict(("cold",))
