"""`python -m bench.batch_policy`: convzoo's defaults against one other layout, interleaved.

`--against delay` (the default): CONVZOO_BATCH_WHEN_IDLE=false, every batch waiting up to the delay, where
the default cuts a batch at once while none runs. `--against one-process`: CONVZOO_FRONT_PROCESSES=0, the
service process listening itself, where the default puts front processes before it.

Two rounds of (defaults, the other layout), each over fmnist-lenet5 at c1, c8, c32 and resnet50 at c1, c8,
through the bench's own harness (workspace, wrk, server CPU per request); prints one line per point and a
final `RESULT [...]` JSON line. The measurements behind those defaults (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench import load, workspace
from bench.__main__ import Bench, Layout

AGAINST = {
    "delay": Layout("batch by delay", 1, 0, batch_when_idle=False),
    "one-process": Layout("no front processes", 1, 0, front_processes=0),
}
PLAN = (("fmnist-lenet5", [1, 8, 32]), ("resnet50", [1, 8]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--against", choices=sorted(AGAINST), default="delay")
    other = AGAINST[parser.parse_args().against]
    workspace.prepare()
    bench = Bench(5.0, 8.0, 3.0, load.available_tool())
    rows: list[dict[str, Any]] = []
    for round_ in range(2):
        for layout in (None, other):
            policy = other.label if layout else "defaults"
            for model, concurrencies in PLAN:
                print(f"round {round_}, {policy}, {model}", flush=True)
                for point in bench.convzoo(model, concurrencies, layout):
                    rows.append({"round": round_, "policy": policy, "model": model, **point})
    print("RESULT " + json.dumps(rows))


if __name__ == "__main__":
    main()
