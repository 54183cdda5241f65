"""ONNX Runtime's intra-op threads: how many, in which pool, chosen once per process.

`CONVZOO_INTRA_OP_THREADS=0` (automatic) is the physical cores among the CPUs this process may use
(`service.compute.cpus`: affinity and cgroup quota), not the host's: ONNX Runtime's own 0 counts the host's cores,
so a pod limited to 2 CPUs on a 64-core node ran 64 threads per loaded model. The preprocessing and the
front processes share these CPUs with inference and are given none apart: with spinning off an idle
intra-op thread sleeps and leaves its core to them, and a lone request gets every core (docs/threads.md).

Pools (`CONVZOO_INTRA_OP_POOL`): with one thread a session runs every operator on its calling thread and
has no pool at all. With more, each session has its own pool (`per_model`), or every session uses ONNX
Runtime's one global pool (`shared`). The global pool is process-wide and for good: it is created before
the first session that uses it, cannot be resized, and from then on every session of the process must
use it; its threads spin (ONNX Runtime's Python API sets no spin control on it).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

import onnxruntime as ort

from service.compute import cpus, host
from service.core.settings import IntraOpPool, Settings

log = logging.getLogger("convzoo.runtime")

Pool = Literal["shared", "per_model", "none"]


@dataclass(frozen=True)
class ThreadPlan:
    usable_cpus: float  # what the process may use (affinity and cgroup quota)
    cpu_source: cpus.Source  # which limit that is
    intra_op_threads: int  # per run: the calling thread and the pool's
    pool: Pool  # "none": one thread, no pool
    spinning: bool  # whether idle pool threads busy-wait
    reason: str  # why, in words, for the host description


_lock = threading.Lock()
_global_pool: tuple[int, int] | None = None  # (intra, inter) of ONNX Runtime's global pool, once created


def choose(
    intra_op_threads: int,
    pool: IntraOpPool = "per_model",
    spinning: bool = False,
    usable: cpus.UsableCpus | None = None,
) -> ThreadPlan:
    """The plan for these settings on the CPUs `usable` describes (by default this process's)."""
    usable = usable or cpus.usable()
    if intra_op_threads > 0:
        threads, why = intra_op_threads, "CONVZOO_INTRA_OP_THREADS"
    else:
        threads = cpus.default_threads(usable)
        cores = cpus.physical_cores(usable.affinity)
        why = f"{usable.cpus:g} usable CPU{'' if usable.cpus == 1 else 's'} ({usable.source})"
        why += f", {cores} physical cores" if cores < usable.whole else ""
    if threads == 1:
        return ThreadPlan(usable.cpus, usable.source, 1, "none", False, f"{why}: one thread, no pool")
    if pool == "shared":
        return ThreadPlan(usable.cpus, usable.source, threads, "shared", True, f"{why}: {threads} threads")
    return ThreadPlan(usable.cpus, usable.source, threads, "per_model", spinning, f"{why}: {threads} threads")


@lru_cache(maxsize=8)
def _chosen(intra_op_threads: int, pool: IntraOpPool, spinning: bool) -> ThreadPlan:
    return choose(intra_op_threads, pool, spinning)


def _install_global_pool(plan: ThreadPlan, inter_op_threads: int) -> ThreadPlan:
    """Create the global pool for `plan`, or find the one already created: a plan that asks for another
    size (another app in the same process) gets the pool that exists, and says so."""
    global _global_pool
    with _lock:
        if _global_pool is None:
            ort.set_global_thread_pool_sizes(plan.intra_op_threads, max(1, inter_op_threads))
            _global_pool = (plan.intra_op_threads, max(1, inter_op_threads))
            log.info("ONNX Runtime's shared intra-op pool: %d threads", plan.intra_op_threads)
            return plan
        threads = _global_pool[0]
    if threads == plan.intra_op_threads:
        return plan
    reason = f"{plan.reason}; the process's shared pool already has {threads}"
    return replace(plan, intra_op_threads=threads, reason=reason)


def for_settings(settings: Settings) -> ThreadPlan:
    """The plan the sessions of this process run under: `choose`, with the global pool created where it
    is shared, or found where it already exists (then every session uses it: ONNX Runtime refuses others).
    The CPUs are read once per process and choice: every session, and the host description, see the same."""
    plan = _chosen(settings.intra_op_threads, settings.intra_op_pool, settings.intra_op_spinning)
    if plan.pool == "shared":
        return _install_global_pool(plan, settings.inter_op_threads)
    with _lock:
        existing = _global_pool
    if existing is None:
        return plan
    return replace(
        plan,
        intra_op_threads=existing[0],
        pool="shared",
        spinning=True,
        reason=f"{plan.reason}; the process's shared pool exists, with {existing[0]} threads",
    )


def apply(opts: ort.SessionOptions, plan: ThreadPlan, inter_op_threads: int) -> None:
    """Set a session's thread options to `plan`."""
    if plan.pool == "shared":
        opts.use_per_session_threads = False  # the pool's sizes are the global pool's
        return
    opts.intra_op_num_threads = plan.intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    if not plan.spinning:
        # Idle intra-op threads otherwise spin for a while after each run, taking the cores that
        # decoding, preprocessing and the event loop need (measured: docs/worker-model.md).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")


def host_description(settings: Settings, provider: str) -> dict[str, object]:
    """This host, with the intra-op threads the sessions run: how many, in which pool, and why (the `host`
    of GET /models, service.api.schemas.ServingHost)."""
    plan = for_settings(settings)
    here = host.describe(provider=provider, intra_op_threads=plan.intra_op_threads)
    return {
        **here.model_dump(mode="json"),
        "usable_cpus": plan.usable_cpus,
        "cpu_source": plan.cpu_source,
        "thread_pool": plan.pool,
        "spinning": plan.spinning,
        "threads_reason": plan.reason,
    }
