"""Each hostile input class of tests/security/hostile.py against a fresh `python -m service`: the status
(HTTP, or the gRPC code), the wall time, the server's CPU time, its peak RSS rise for that one request,
the RSS it still holds a second later, and whether its whole log (shutdown included) is JSON lines.

    python scripts/hostile.py                      # this checkout
    python scripts/hostile.py --repo OTHER_CHECKOUT # the same classes against another version's code
    python scripts/hostile.py --second-pass        # only the second corpus's classes (docs/security.md)

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
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from convzoo.launch import Launch, Probe, Running, cpu_seconds, free_port, start  # noqa: E402
from tests.security.hostile import CLASSES, SECOND_PASS, Hostile  # noqa: E402

MIB = 1 << 20


def _proc_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


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
        snapshot[p] = (_proc_kib(p, "VmRSS"), cpu_seconds(p))
    return snapshot


def _start(args: argparse.Namespace, log: Path) -> Running:
    port = free_port()
    while port == args.grpc_port:  # two free ports asked one after the other can be the same
        port = free_port()
    env = {
        **os.environ,
        "CONVZOO_REGISTRY_PATH": str(args.registry),
        "CONVZOO_MODELS_DIR": str(args.models_dir),
        "CONVZOO_PRELOAD": args.model,
        "CONVZOO_CALIBRATION_S": "0.02",
        "CONVZOO_GRPC_PORT": str(args.grpc_port),
        "PYTHONPATH": str(args.repo),
    }
    limit = int(args.max_vm_gib * (1 << 30))

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    probe = Probe(f"/v2/models/{args.model}/ready", timeout_s=60, every_s=0.1)
    launch = Launch(
        env=env, cwd=args.repo, log=log, port=port, probe=probe, tail_chars=3000, preexec=limit_memory
    )
    return start(launch)  # this script starts no threads: limit_memory may run between fork and exec


def _send(args: argparse.Namespace, url: str, hostile: Hostile, body: bytes) -> object:
    """The request of one class; its HTTP status or gRPC code (or the client's error)."""
    if hostile.path == "grpc":
        import grpc

        with grpc.insecure_channel(
            f"127.0.0.1:{args.grpc_port}", options=[("grpc.max_send_message_length", -1)]
        ) as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            try:
                call(body, timeout=args.timeout_s)
                return "OK"
            except grpc.RpcError as exc:
                return str(exc.code().name)
    path = hostile.path.format(model=args.model)
    params = {"model": args.model} if path == "/classify" else {}
    if path == "/compare":
        params = {"models": args.model}
    try:
        r = httpx.post(
            url + path,
            params=params,
            content=body,
            headers={"content-type": hostile.content_type, **dict(hostile.headers)},
            timeout=args.timeout_s,
        )
        return r.status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


def _log_ok(log: Path) -> bool:
    """Whether every line the server wrote is one JSON object."""
    for line in log.read_text(errors="replace").splitlines():
        try:
            if not isinstance(json.loads(line), dict):
                return False
        except ValueError:
            return False
    return True


def measure(args: argparse.Namespace, hostile: Hostile, log: Path) -> dict[str, object]:
    body = hostile.body()
    if hostile.path == "grpc":  # the model's name goes into the message here
        from tritonclient.grpc import service_pb2 as pb

        message = pb.ModelInferRequest.FromString(body)
        if message.model_name == "{model}":
            message.model_name = args.model
        body = message.SerializeToString()
    args.grpc_port = free_port()
    server = _start(args, log)
    url, pid = server.url, server.pid
    try:
        params = {"model": args.model}
        for warm in (_tiny(), _large()):  # the large one starts the decoding workers, where there are any
            httpx.post(
                url + "/classify",
                params=params,
                content=warm,
                headers={"content-type": "image/png"},
                timeout=120,
            )
        before = _snapshot(pid)
        started = time.perf_counter()
        status = _send(args, url, hostile, body)
        wall = time.perf_counter() - started
        alive = server.process.poll() is None
        cpu = rise = held = None
        if alive:
            # CPU of the server and its workers together; the peak RSS rise of the one that rose most (a
            # worker started by this request counts from zero).
            after = {p: (_proc_kib(p, "VmHWM"), cpu_seconds(p)) for p in [pid, *_children(pid)]}
            cpu = sum(c - before.get(p, (0, 0.0))[1] for p, (_, c) in after.items())
            rise = max((hwm - before.get(p, (0, 0.0))[0]) / 1024 for p, (hwm, _) in after.items())
            time.sleep(1.0)  # what the server still holds a second after answering
            held = (_proc_kib(pid, "VmRSS") - before[pid][0]) / 1024
        row = {
            "class": hostile.name,
            "bytes": len(body),
            "status": status,
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3) if cpu is not None else None,
            "peak_rss_rise_mib": round(rise, 1) if rise is not None else None,
            "held_after_1s_mib": round(held, 1) if held is not None else None,
        }
    finally:
        server.stop()
        row_log_ok = _log_ok(log)
    return {**row, "log_json": row_log_ok}


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
    parser.add_argument("--second-pass", action="store_true", help="only the second corpus's classes")
    args = parser.parse_args()
    rows = []
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"hostile-{os.getpid()}.log"
    for hostile in SECOND_PASS if args.second_pass else CLASSES + SECOND_PASS:
        if args.only and args.only not in hostile.name:
            continue
        row = measure(args, hostile, log)
        rows.append(row)
        print(
            f"{row['class']:<34} {row['bytes']:>10} B  {row['status']!s:>5}  {row['wall_s']:>7.2f} s wall"
            f"  {row['cpu_s']!s:>7} s CPU  {row['peak_rss_rise_mib']!s:>7} MiB  held {row['held_after_1s_mib']!s:>6} MiB  log JSON {row['log_json']}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
