"""`python -m bench.batch_policy`: convzoo's default batcher against CONVZOO_BATCH_WHEN_IDLE=true, interleaved.

Two rounds of (defaults, batch when idle), each over fmnist-lenet5 at c1, c8, c32 and resnet50 at c1, c8,
through the bench's own harness (workspace, wrk, server CPU per request); prints one line per point and a
final `RESULT [...]` JSON line. The measurement behind the setting's default (docs/bench-peers.md).
"""

from __future__ import annotations

import json
from typing import Any

from bench import load, workspace
from bench.__main__ import Bench, Layout

WHEN_IDLE = Layout("batch when idle", 1, 0, batch_when_idle=True)
PLAN = (("fmnist-lenet5", [1, 8, 32]), ("resnet50", [1, 8]))


def main() -> None:
    workspace.prepare()
    bench = Bench(5.0, 8.0, 3.0, load.available_tool())
    rows: list[dict[str, Any]] = []
    for round_ in range(2):
        for layout in (None, WHEN_IDLE):
            policy = "when idle" if layout else "default"
            for model, concurrencies in PLAN:
                print(f"round {round_}, {policy}, {model}", flush=True)
                for point in bench.convzoo(model, concurrencies, layout):
                    rows.append({"round": round_, "policy": policy, "model": model, **point})
    print("RESULT " + json.dumps(rows))


if __name__ == "__main__":
    main()
