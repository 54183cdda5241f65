"""`python -m bench.batch_policy`: convzoo's default batcher (a batch cut at once while none runs) against
CONVZOO_BATCH_WHEN_IDLE=false (every batch waits up to the delay), interleaved.

Two rounds of (defaults, batch by delay), each over fmnist-lenet5 at c1, c8, c32 and resnet50 at c1, c8,
through the bench's own harness (workspace, wrk, server CPU per request); prints one line per point and a
final `RESULT [...]` JSON line. The measurement behind the setting's default (docs/architecture.md).
"""

from __future__ import annotations

import json
from typing import Any

from bench import load, workspace
from bench.__main__ import Bench, Layout

BY_DELAY = Layout("batch by delay", 1, 0, batch_when_idle=False)
PLAN = (("fmnist-lenet5", [1, 8, 32]), ("resnet50", [1, 8]))


def main() -> None:
    workspace.prepare()
    bench = Bench(5.0, 8.0, 3.0, load.available_tool())
    rows: list[dict[str, Any]] = []
    for round_ in range(2):
        for layout in (None, BY_DELAY):
            policy = "by delay" if layout else "default (when idle)"
            for model, concurrencies in PLAN:
                print(f"round {round_}, {policy}, {model}", flush=True)
                for point in bench.convzoo(model, concurrencies, layout):
                    rows.append({"round": round_, "policy": policy, "model": model, **point})
    print("RESULT " + json.dumps(rows))


if __name__ == "__main__":
    main()
