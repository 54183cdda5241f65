"""Each hostile input class of tests/security/hostile.py against a fresh `python -m service`: the status,
the wall time, the server's CPU time and its peak RSS rise for that one request.

    python scripts/hostile.py                      # this checkout
    python scripts/hostile.py --repo OTHER_CHECKOUT # the same classes against another version's code

A fresh server per class, so that each peak (VmHWM) belongs to one request; CPU time and peak RSS include
the server's decoding worker processes, where it has them. The server runs under an
address-space limit (--max-vm-gib), so that a class that once asked for tens of gigabytes fails in the
server instead of taking the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.security.hostile import CLASSES, Hostile

MIB = 1 << 20


def _proc_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """The server's child processes (its decoding workers, where it has any)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _snapshot(pid: int) -> dict[int, tuple[int, float]]:
    """RSS (KiB) and CPU seconds of the server and of each child, their peaks (VmHWM) reset to now."""
    snapshot = {}
    for p in [pid, *_children(pid)]:
        Path(f"/proc/{p}/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS
        snapshot[p] = (_proc_kib(p, "VmRSS"), _cpu_s(p))
    return snapshot


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "CONVZOO_PORT": str(port),
        "CONVZOO_HOST": "127.0.0.1",
        "CONVZOO_REGISTRY_PATH": str(args.registry),
        "CONVZOO_MODELS_DIR": str(args.models_dir),
        "CONVZOO_PRELOAD": args.model,
        "CONVZOO_CALIBRATION_S": "0.02",
        "PYTHONPATH": str(args.repo),
    }
    limit = int(args.max_vm_gib * (1 << 30))

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=args.repo,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_memory,  # noqa: PLW1509  (this script starts no threads)
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + f"/v2/models/{args.model}/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")


def measure(args: argparse.Namespace, hostile: Hostile, log: Path) -> dict[str, object]:
    body = hostile.body()
    proc, url = _start(args, log)
    try:
        path = hostile.path.format(model=args.model)
        params = {"model": args.model} if path == "/classify" else {}
        for warm in (_tiny(), _large()):  # the large one starts the decoding workers, where there are any
            httpx.post(url + "/classify", params=params, content=warm, headers={"content-type": "image/png"})
        before = _snapshot(proc.pid)
        started = time.perf_counter()
        try:
            r = httpx.post(
                url + path,
                params=params,
                content=body,
                headers={"content-type": hostile.content_type},
                timeout=args.timeout_s,
            )
            status: object = r.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        wall = time.perf_counter() - started
        alive = proc.poll() is None
        cpu = rise = None
        if alive:
            # CPU of the server and its workers together; the peak RSS rise of the one that rose most (a
            # worker started by this request counts from zero).
            after = {p: (_proc_kib(p, "VmHWM"), _cpu_s(p)) for p in [proc.pid, *_children(proc.pid)]}
            cpu = sum(c - before.get(p, (0, 0.0))[1] for p, (_, c) in after.items())
            rise = max((hwm - before.get(p, (0, 0.0))[0]) / 1024 for p, (hwm, _) in after.items())
        return {
            "class": hostile.name,
            "bytes": len(body),
            "status": status,
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3) if cpu is not None else None,
            "peak_rss_rise_mib": round(rise, 1) if rise is not None else None,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _tiny() -> bytes:
    from tests.security.hostile import grey_png

    return grey_png(28, 28)


def _large() -> bytes:
    from tests.security.hostile import noise_png

    return noise_png(1800, 1200)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose service is measured")
    parser.add_argument("--registry", type=Path, default=REPO / "registry.yaml")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--model", default="fmnist-lenet5")
    parser.add_argument("--max-vm-gib", type=float, default=8.0)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--only", help="classes whose name contains this text")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"hostile-{os.getpid()}.log"
    for hostile in CLASSES:
        if args.only and args.only not in hostile.name:
            continue
        row = measure(args, hostile, log)
        rows.append(row)
        print(
            f"{row['class']:<34} {row['bytes']:>10} B  {row['status']!s:>5}  {row['wall_s']:>7.2f} s wall"
            f"  {row['cpu_s']!s:>7} s CPU  {row['peak_rss_rise_mib']!s:>7} MiB",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
