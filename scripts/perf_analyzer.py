"""`make bench-perf-analyzer`: Triton's perf_analyzer (PyPI `perf-analyzer`) against convzoo's /v2, over
HTTP and gRPC, at the given concurrencies; then over HTTP with tracing on (spans exported by OTLP to a
local receiver that discards them), for the cost of tracing. Prints a Markdown table for docs/bench.md.

The perf-analyzer wheel needs glibc 2.38 and GCC 13's libstdc++. On an older system (Debian 12) the
binary runs under the C and C++ runtimes of Debian 13, downloaded as .deb packages into .cache/ with
apt-get (a private package list: the system's sources are not touched) and loaded by their own loader.
"""

from __future__ import annotations

import argparse
import csv
import http.server
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import PERF_ANALYZER_BEGIN, PERF_ANALYZER_END  # noqa: E402  (run as a script: the repository on the path first)
from convzoo.launch import cpu_seconds  # noqa: E402
from tests.live import Server, free_port, start_service, stop_service  # noqa: E402

CACHE = REPO / ".cache" / "perf_analyzer"
WHEEL_VERSION = "2.60.0"
RUNTIME_DEBS = ["libc6", "libstdc++6", "libgcc-s1", "libssl3t64", "zlib1g"]
SOURCES = """Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


# --- the binary -------------------------------------------------------------------------------------------


def _binary() -> Path:
    path = CACHE / "perf_analyzer" / "bin" / "perf_analyzer"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
         "3.11", "--platform", "manylinux_2_38_x86_64", "-d", str(CACHE), f"perf-analyzer=={WHEEL_VERSION}"],
        check=True,
    )  # fmt: skip
    (wheel,) = CACHE.glob(f"perf_analyzer-{WHEEL_VERSION}-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(CACHE)
    path.chmod(0o755)
    return path


def _runtime() -> Path:
    """Debian 13's libc, libstdc++ and friends, unpacked (not installed) under .cache/."""
    root = CACHE / "runtime"
    libs = root / "usr" / "lib" / "x86_64-linux-gnu"
    if (libs / "ld-linux-x86-64.so.2").exists():
        return libs
    apt = CACHE / "apt"
    for d in ("lists/partial", "cache/archives/partial", "sources", "debs"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    (apt / "sources" / "trixie.sources").write_text(SOURCES)
    options = [
        "-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={apt / 'sources'}",
        "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", f"Dir::Cache={apt / 'cache'}",
        "-o", "Dir::State::status=/dev/null", "-qq",
    ]  # fmt: skip
    subprocess.run(["apt-get", *options, "update"], check=True)
    subprocess.run(["apt-get", *options, "download", *RUNTIME_DEBS], check=True, cwd=apt / "debs")
    for deb in (apt / "debs").glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return libs


def command() -> list[str]:
    binary = _binary()
    if tuple(int(p) for p in platform.libc_ver()[1].split(".")[:2]) >= (2, 38):
        return [str(binary)]
    libs = _runtime()
    return [str(libs / "ld-linux-x86-64.so.2"), "--library-path", str(libs), str(binary)]


# --- runs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    model: str
    protocol: str
    tracing: str  # "off", "on", or "on, N% sampled"
    concurrency: int
    throughput: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float  # the server process's CPU time per inference request, over the whole run


def _served(server: Server, model: str) -> int:
    stats = httpx.get(f"{server.url}/v2/models/{model}/stats", timeout=10).json()
    return int(stats["model_stats"][0]["inference_count"])


def measure(cmd: list[str], server: Server, grpc_port: int, model: str, protocol: str, args: argparse.Namespace,
            tracing: str) -> list[Row]:  # fmt: skip
    url = server.url.removeprefix("http://") if protocol == "http" else f"127.0.0.1:{grpc_port}"
    rows: list[Row] = []
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        # Server CPU per request is steadier than throughput on a shared host: measured around each run.
        cpu, served = cpu_seconds(server.pid), _served(server, model)
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.csv"
            run = [
                *cmd, "-m", model, "-u", url, "-i", protocol, "--concurrency-range", f"{concurrency}:{concurrency}",
                "--measurement-interval", str(args.interval_ms), "--stability-percentage", "50",
                "--max-trials", "10", "--input-data", "zero", "-f", str(report),  # random bits: NaNs, refused
            ]  # fmt: skip
            done = subprocess.run(run, capture_output=True, text=True, timeout=900, check=False)
            if done.returncode != 0:
                raise SystemExit(f"perf_analyzer failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
            (r,) = list(csv.DictReader(io.StringIO(report.read_text())))
        cpu_ms = (cpu_seconds(server.pid) - cpu) * 1e3 / max(1, _served(server, model) - served - 1)
        rows.append(
            Row(
                model=model,
                protocol=protocol,
                tracing=tracing,
                concurrency=int(r["Concurrency"]),
                throughput=float(r["Inferences/Second"]),
                p50_ms=float(r["p50 latency"]) * 1e-3,
                p99_ms=float(r["p99 latency"]) * 1e-3,
                server_cpu_ms=cpu_ms,
            )
        )
    return rows


def _table(rows: list[Row]) -> str:
    # perf_analyzer's server-side columns stay empty: it looks statistics up by an integer model version
    # (Triton's repository layout), and registry versions are dates. /v2/models/{name}/stats has them.
    lines = [
        "| model | protocol | tracing | concurrency | infer/s | p50 ms | p99 ms | server CPU ms/request |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.protocol} | {r.tracing} | {r.concurrency} | {r.throughput:,.1f} "
            f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.server_cpu_ms:.3f} |"
        )
    return "\n".join(lines)


def _shown_args() -> str:
    """The command's arguments as a reader would rerun them (no local output paths)."""
    argv, shown = sys.argv[1:], []
    while argv:
        arg = argv.pop(0)
        if arg == "--json":
            argv = argv[1:]
        elif not arg.startswith("--json="):
            shown.append(arg)
    return " ".join(shown)


BEGIN, END = PERF_ANALYZER_BEGIN, PERF_ANALYZER_END  # bench/report.py keeps the section on a new run


def _write_docs(args: argparse.Namespace, table: str, rows: list[Row], before: float, after: float) -> None:
    """The section of docs/bench.md between the markers (appended the first time)."""
    cost = []
    for r in (r for r in rows if r.tracing != "off"):
        (off,) = [o for o in rows if o.tracing == "off" and o.protocol == r.protocol and o.model == r.model
                  and o.concurrency == r.concurrency]  # fmt: skip
        cost.append(f"{r.tracing}, c{r.concurrency}: {r.throughput:,.1f} vs {off.throughput:,.1f} infer/s "
                    f"({(r.throughput / off.throughput - 1) * 100:+.0f}%), server CPU {r.server_cpu_ms:.3f} vs "
                    f"{off.server_cpu_ms:.3f} ms/request ({(r.server_cpu_ms / off.server_cpu_ms - 1) * 100:+.0f}%)")  # fmt: skip
    section = f"""{BEGIN}
## perf_analyzer (Triton's load generator) against /v2

Generated by `make bench-perf-analyzer PERF_ARGS="{_shown_args()}"` on
{time.strftime("%Y-%m-%dT%H:%M:%S%z")}, {os.cpu_count()} vCPUs, load average {before:.2f} before and {after:.2f} after
(other work was running on the host: treat the figures as indicative). perf_analyzer {WHEEL_VERSION}, one
binary-data request of one zero-filled tensor per inference (`--input-data zero`; random bits would hold
NaNs, which `/v2` refuses), `--measurement-interval {args.interval_ms}` ms, stability within 50%; the
service with its defaults, CONVZOO_GRPC_PORT set, one process.

{table}

Tracing on (spans exported by OTLP/HTTP to a local receiver that discards them; every trace, then
{args.sample_ratio:.0%} of them through `OTEL_TRACES_SAMPLER=parentbased_traceidratio`) against off, {args.tracing_model} over HTTP: {"; ".join(cost) or "not run"}. On a shared host, throughput
moves by tens of percent between identical runs; the server's CPU time per request (its process's user +
system time over the run, divided by the requests it served) is the steadier measure of the cost.

perf_analyzer's server-side columns (queue, compute) stay empty: it looks the statistics up by an
integer model version, Triton's repository layout, and registry versions are dates;
`/v2/models/{{name}}/stats` (or ModelStatistics over gRPC) has them. `make bench`'s (b) rows above
measure `/classify`, which decodes and preprocesses a PNG per request; these rows send ready tensors.
{END}
"""
    path = REPO / "docs" / "bench.md"
    text = path.read_text()
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


class _Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that accepts and discards spans."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def serve(args: argparse.Namespace, log: Path, **env: str) -> tuple[Server, int]:
    grpc_port = free_port()
    server = start_service(
        registry_path=REPO / "registry.yaml",
        models_dir=REPO / "models",
        log_path=log,
        env={
            "CONVZOO_GRPC_PORT": str(grpc_port),
            "CONVZOO_PRELOAD": args.models,
            "CONVZOO_ALLOW_RANDOM_WEIGHTS": "true",
            "CONVZOO_CALIBRATION_S": "0",
            "CONVZOO_INTRA_OP_THREADS": "0",
            "CONVZOO_LOG_LEVEL": "warning",
            "OMP_NUM_THREADS": str(os.cpu_count() or 1),
            **env,
        },
        probe="/health/live",
    )
    for model in args.models.split(","):
        if httpx.get(f"{server.url}/v2/models/{model}/ready", timeout=60).status_code != 200:
            stop_service(server)
            raise SystemExit(
                f"model {model} is not ready (built? `make models`, or export it):\n{server.log()}"
            )
    return server, grpc_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fmnist-lenet5", help="comma-separated registry names")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated concurrencies")
    parser.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer --measurement-interval")
    parser.add_argument("--tracing-model", default="fmnist-lenet5", help="model of the tracing on/off runs")
    parser.add_argument("--sample-ratio", type=float, default=0.1, help="the sampled tracing run's ratio")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument(
        "--write-docs", action="store_true", help="replace the perf_analyzer section of docs/bench.md"
    )
    args = parser.parse_args()
    cmd = command()
    rows: list[Row] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        server, grpc_port = serve(args, Path(tmp) / "server.log")
        try:
            for model in args.models.split(","):
                for protocol in ("http", "grpc"):
                    rows += measure(cmd, server, grpc_port, model, protocol, args, tracing="off")
        finally:
            stop_service(server)
        if args.tracing_model:
            sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
            threading.Thread(target=sink.serve_forever, daemon=True).start()
            endpoint = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
            try:
                for ratio in (1.0, args.sample_ratio):
                    # The OpenTelemetry SDK's own sampler variables: keep `ratio` of the traces.
                    sampler = {
                        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                        "OTEL_TRACES_SAMPLER_ARG": str(ratio),
                    }
                    log = Path(tmp) / f"traced-{ratio}.log"
                    server, grpc_port = serve(args, log, CONVZOO_OTLP_ENDPOINT=endpoint, **sampler)
                    label = "on" if ratio == 1.0 else f"on, {ratio:.0%} sampled"
                    try:
                        rows += measure(
                            cmd, server, grpc_port, args.tracing_model, "http", args, tracing=label
                        )
                    finally:
                        stop_service(server)
            finally:
                sink.shutdown()
    table = _table(rows)
    print(table)
    if args.write_docs:
        _write_docs(args, table, rows, load_before, os.getloadavg()[0])
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
