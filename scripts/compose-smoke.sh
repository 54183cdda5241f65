#!/usr/bin/env bash
# `make test-docker`: the docker-compose deployment, end to end, on this machine.
#
#  1. a Docker engine (installed with apt and started when none runs) and docker compose;
#  2. the base images, built locally when no registry can be reached (scripts/build-base-image.sh),
#     and a local nginx image when the official one cannot be pulled;
#  3. builds the runtime image with `docker compose build`, starts `api`, waits for healthy, checks
#     the published port is bound to 127.0.0.1, the user is not root, the models are read-only, and
#     classifies a Fashion-MNIST test image through the published port;
#  4. scales to 2 replicas behind the nginx load balancer and checks that both answer;
#  5. restarts one replica while requests keep flowing through the load balancer: none may fail,
#     and the restarted replica must come back healthy and answer again;
#  6. the `monitoring` profile: Debian's Prometheus (deploy/prometheus) reports both replicas up, loads
#     the rules, and sum(convzoo_requests_total) rises after traffic;
#  7. `down -v`, leaving no container, network or volume behind (and stops dockerd if it started it).
#
# Env: SMOKE_API_PORT (18000), SMOKE_LB_PORT (18080), SMOKE_PROMETHEUS_PORT (19090), SMOKE_KEEP_DOCKERD=1 to leave a dockerd it started.
# The host's extra CA certificates (/usr/local/share/ca-certificates) are copied into certs/ for the
# build and removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

START=$(date +%s)
PROJECT=convzoo-smoke
API_PORT_SMOKE=${SMOKE_API_PORT:-18000}
LB_PORT_SMOKE=${SMOKE_LB_PORT:-18080}
PROMETHEUS_PORT_SMOKE=${SMOKE_PROMETHEUS_PORT:-19090}
WORK=$(mktemp -d /tmp/convzoo-smoke.XXXXXX)
STARTED_DOCKERD_PID=""
ADDED_CERTS=()
COMPOSE=()

log() { printf '[smoke %4ss] %s\n' "$(($(date +%s) - START))" "$*"; }
fail() { log "FAIL: $*"; exit 1; }
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------------------------------------
cleanup() {
    local rc=$?
    set +e
    if [ "${#COMPOSE[@]}" -gt 0 ]; then
        if [ "$rc" -ne 0 ]; then
            log "state at failure:"
            compose --profile scale --profile monitoring ps
            compose --profile scale --profile monitoring logs --tail 40
        fi
        compose --profile scale --profile export --profile monitoring down -v --remove-orphans --timeout 30 >/dev/null 2>&1
        local left
        left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
        [ -z "$left" ] || { log "removing leftover containers"; docker rm -f $left >/dev/null; }
    fi
    for f in "${ADDED_CERTS[@]}"; do rm -f "$f"; done
    if [ -n "$STARTED_DOCKERD_PID" ] && [ "${SMOKE_KEEP_DOCKERD:-0}" != 1 ]; then
        log "stopping the dockerd this script started (pid $STARTED_DOCKERD_PID)"
        sudo_ kill "$STARTED_DOCKERD_PID"
        for _ in $(seq 30); do sudo_ kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    fi
    rm -rf "$WORK"
    log "$([ "$rc" -eq 0 ] && echo PASSED || echo FAILED) in $(($(date +%s) - START)) s"
    exit "$rc"
}
trap cleanup EXIT

compose() {
    API_PORT=$API_PORT_SMOKE LB_PORT=$LB_PORT_SMOKE PROMETHEUS_PORT=$PROMETHEUS_PORT_SMOKE \
        "${COMPOSE[@]}" -p "$PROJECT" "$@"
}

# ---------------------------------------------------------------------------------------------
ensure_engine() {
    if docker info >/dev/null 2>&1; then
        log "Docker engine running: $(docker version -f '{{.Server.Version}}' 2>/dev/null)"
        return
    fi
    if ! command -v dockerd >/dev/null; then
        log "installing docker.io"
        sudo_ apt-get update -qq
        DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq -o DPkg::Lock::Timeout=600 docker.io >/dev/null
    fi
    log "starting dockerd"
    sudo_ sh -c "nohup dockerd >/var/log/convzoo-smoke-dockerd.log 2>&1 & echo \$! > $WORK/dockerd.pid"
    STARTED_DOCKERD_PID=$(cat "$WORK/dockerd.pid")
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || fail "dockerd did not start; see /var/log/convzoo-smoke-dockerd.log"
    log "Docker engine started: $(docker version -f '{{.Server.Version}}')"
}

ensure_compose() {
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    else
        if ! command -v docker-compose >/dev/null; then
            log "installing docker-compose"
            DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
                docker-compose >/dev/null
        fi
        COMPOSE=(docker-compose)
    fi
    log "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || true))"
}

add_host_certs() {
    local src dst
    for src in /usr/local/share/ca-certificates/*.crt; do
        [ -f "$src" ] || continue
        dst="certs/smoke-$(basename "$src")"
        [ -e "$dst" ] && continue
        cp "$src" "$dst"
        ADDED_CERTS+=("$dst")
    done
    [ "${#ADDED_CERTS[@]}" -eq 0 ] || log "build trusts ${#ADDED_CERTS[@]} extra CA certificate(s) from the host"
}

ensure_lb_image() {
    local official=nginx:stable-bookworm
    if docker image inspect "$official" >/dev/null 2>&1 || timeout 60 docker pull -q "$official" >/dev/null 2>&1; then
        export LB_IMAGE=$official
        return
    fi
    export LB_IMAGE=convzoo-nginx:local
    docker image inspect "$LB_IMAGE" >/dev/null 2>&1 && { log "load balancer image: $LB_IMAGE"; return; }
    log "no registry: building $LB_IMAGE (Debian's nginx) for the load balancer"
    docker build -q --network host -t "$LB_IMAGE" --label org.convzoo.base=local - >/dev/null <<'DOCKERFILE'
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \
 && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 8080
CMD ["nginx", "-g", "daemon off;"]
DOCKERFILE
}

# ---------------------------------------------------------------------------------------------
containers() { compose ps -q "$1" 2>/dev/null | sort; }

wait_healthy() {  # wait_healthy SECONDS CONTAINER...
    local deadline=$(($(date +%s) + $1)) c status pending
    shift
    while :; do
        pending=0
        for c in "$@"; do
            status=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$c")
            [ "$status" = healthy ] || pending=1
        done
        [ "$pending" -eq 0 ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || fail "containers not healthy after the wait: $*"
        sleep 2
    done
}

# A Fashion-MNIST test image as PNG (stdlib only), or a synthetic one without the dataset.
make_image() {
    python3 - "$WORK/image.png" <<'PY'
import gzip, struct, sys, zlib
from pathlib import Path
idx = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
px = gzip.open(idx).read()[16:16 + 784] if idx.exists() else bytes((r * 9 + c * 3) % 256 for r in range(28) for c in range(28))
rows = b"".join(b"\x00" + px[r * 28:(r + 1) * 28] for r in range(28))
def chunk(tag, body):
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
Path(sys.argv[1]).write_bytes(png)
PY
}

# classify URL [N] [SECONDS]: N POSTs (or as many as fit in SECONDS); prints a JSON summary.
# Exits non-zero unless every answer is a 200 with well-formed predictions.
classify() {
    python3 - "$1" "${2:-1}" "${3:-0}" "$WORK/image.png" <<'PY'
import json, sys, time, urllib.error, urllib.request
url, n, seconds, image = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), open(sys.argv[4], "rb").read()
statuses, upstreams, top, deadline, i = {}, {}, None, time.monotonic() + seconds, 0
while i < n or time.monotonic() < deadline:
    i += 1
    req = urllib.request.Request(url + "/classify?top_k=3", data=image, headers={"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, body, upstream = r.status, json.load(r), r.headers.get("X-Convzoo-Upstream")
        preds = body["results"][0]["predictions"]
        assert len(preds) == 3 and preds == sorted(preds, key=lambda p: -p["score"]), body
        top = f'{preds[0]["label"]} ({preds[0]["score"]:.2f}, {body["model"]})'
    except urllib.error.HTTPError as e:
        status, upstream = e.code, e.headers.get("X-Convzoo-Upstream")
    except OSError as e:
        status, upstream = type(e).__name__, None
    statuses[str(status)] = statuses.get(str(status), 0) + 1
    if upstream:
        for u in upstream.split(", "):  # a retried request lists every replica it tried
            upstreams[u] = upstreams.get(u, 0) + 1
    if seconds:
        time.sleep(0.05)
print(json.dumps({"requests": i, "statuses": statuses, "upstreams": upstreams, "top": top}))
sys.exit(0 if set(statuses) == {"200"} else 1)
PY
}

http_get() {  # http_get URL -> prints the status code
    python3 -c '
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print(0)' "$1"
}

# ---------------------------------------------------------------------------------------------
ensure_engine
ensure_compose
command -v python3 >/dev/null || fail "python3 is needed on the host"
compose --profile scale --profile export --profile monitoring down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true

log "base images"
scripts/build-base-image.sh
ensure_lb_image
add_host_certs

log "docker compose build api (target runtime)"
BUILD_NETWORK=host compose build api >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log"; fail "build"; }
# Earlier builds of the runtime image, now untagged (the build-stage cache is kept).
docker image prune -f --filter label=org.opencontainers.image.title=convzoo >/dev/null
log "image $(docker image inspect -f '{{.Id}}' "${CONVZOO_IMAGE:-convzoo:latest}" | cut -c8-19)," \
    "$(($(docker image inspect -f '{{.Size}}' "${CONVZOO_IMAGE:-convzoo:latest}") / 1000000)) MB"
make_image

# --- one replica --------------------------------------------------------------------------------
log "up: api"
compose up -d --no-build api >/dev/null 2>&1 || { compose up -d --no-build api; fail "up"; }
api1=$(containers api)
wait_healthy 180 $api1
log "api healthy"
binding=$(docker port "$api1" 8000/tcp | head -n1)
[ "$binding" = "127.0.0.1:$API_PORT_SMOKE" ] || fail "api published on $binding, expected 127.0.0.1:$API_PORT_SMOKE"
uid=$(docker exec "$api1" id -u)
[ "$uid" != 0 ] || fail "api runs as root"
if docker exec "$api1" python -c "open('/var/lib/convzoo/registry.yaml', 'a')" 2>/dev/null; then
    fail "the models volume is writable"
fi
log "published on $binding, uid $uid, models read-only"
if [ "${#ADDED_CERTS[@]}" -gt 0 ]; then
    # The build trusted the host's CA certificates; none may be left in the runtime image.
    markers=()
    # A full 64-character line from the middle of each certificate's body: unique to it.
    for f in "${ADDED_CERTS[@]}"; do
        markers+=("$(grep -E '^[A-Za-z0-9+/]{64}$' "$f" | awk '{l[NR] = $0} END {print l[int((NR + 1) / 2)]}')")
    done
    docker exec -i "$api1" python - "${markers[@]}" <<'PY' || fail "a build-time CA certificate is in the runtime image"
import os, sys
markers = [m.encode() for m in sys.argv[1:] if m]
for top in ("/etc", "/tmp", "/opt", "/usr/local", "/usr/share/ca-certificates", "/var/lib/convzoo"):
    for root, _, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            try:
                if os.path.islink(path) or os.path.getsize(path) > 4_000_000:
                    continue
                data = open(path, "rb").read()
            except OSError:
                continue
            if any(m in data for m in markers):
                sys.exit(f"found in {path}")
PY
    log "no build-time CA certificate in the runtime image"
fi
for path in /health/live /health/ready /v2/health/ready; do  # the last: KServe's probe
    [ "$(http_get "http://127.0.0.1:$API_PORT_SMOKE$path")" = 200 ] || fail "GET $path is not 200"
done
out=$(classify "http://127.0.0.1:$API_PORT_SMOKE") || fail "classify through the published port: $out"
log "classify via 127.0.0.1:$API_PORT_SMOKE: $out"

# --- two replicas behind the load balancer ------------------------------------------------------
log "scale: 2 api replicas behind nginx (API_PORT empty: an ephemeral loopback port per replica)"
API_PORT_SMOKE="" compose --profile scale up -d --no-build --scale api=2 >/dev/null 2>&1 \
    || { API_PORT_SMOKE="" compose --profile scale up -d --no-build --scale api=2; fail "scale up"; }
mapfile -t replicas < <(containers api)
[ "${#replicas[@]}" -eq 2 ] || fail "expected 2 api replicas, found ${#replicas[@]}"
wait_healthy 180 "${replicas[@]}"
lb=$(containers lb)
[ -n "$lb" ] || fail "no lb container"
lb_url="http://127.0.0.1:$LB_PORT_SMOKE"
for _ in $(seq 30); do [ "$(http_get "$lb_url/health/ready")" = 200 ] && break; sleep 1; done
[ "$(http_get "$lb_url/health/ready")" = 200 ] || fail "load balancer not ready"
ips=()
for c in "${replicas[@]}"; do
    ips+=("$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$c")")
done
log "replicas ${ips[*]} healthy, load balancer on 127.0.0.1:$LB_PORT_SMOKE"
out=$(classify "$lb_url" 20) || fail "classify through the load balancer: $out"
log "20 requests via the load balancer: $out"
for ip in "${ips[@]}"; do
    grep -q "\"$ip:8000\"" <<<"$out" || fail "replica $ip did not answer through the load balancer"
done
log "both replicas answered"

# --- restart one replica under load -------------------------------------------------------------
victim=${replicas[0]}
log "restart replica ${ips[0]} while requests flow through the load balancer"
classify "$lb_url" 0 25 >"$WORK/during.json" &
load_pid=$!
sleep 2
docker restart -t 30 "$victim" >/dev/null
wait "$load_pid" || fail "requests failed during the restart: $(cat "$WORK/during.json")"
log "during the restart: $(cat "$WORK/during.json")"
wait_healthy 180 "$victim"
ip_after=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$victim")
recovered=0
for _ in $(seq 12); do
    out=$(classify "$lb_url" 10) || fail "classify after the restart: $out"
    if grep -q "\"$ip_after:8000\"" <<<"$out"; then recovered=1; break; fi
    sleep 5
done
[ "$recovered" -eq 1 ] || fail "the restarted replica ($ip_after) is not served again: $out"
log "restarted replica healthy and answering again: $out"

# --- Prometheus scraping every replica ----------------------------------------------------------
# promql QUERY: the first value of an instant query ("" when the result is empty).
promql() {
    python3 - "http://127.0.0.1:$PROMETHEUS_PORT_SMOKE" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "/api/v1/query?" + urllib.parse.urlencode({"query": sys.argv[2]})
try:
    result = json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]
except OSError:
    result = []
print(result[0]["value"][1] if result else "")
PY
}
log "monitoring: Debian's Prometheus (deploy/prometheus) scraping the replicas"
BUILD_NETWORK=host compose --profile monitoring build prometheus >"$WORK/prometheus-build.log" 2>&1 \
    || { tail -n 40 "$WORK/prometheus-build.log"; fail "prometheus build"; }
API_PORT_SMOKE="" compose --profile scale --profile monitoring up -d --no-build --no-deps prometheus >/dev/null 2>&1 \
    || { API_PORT_SMOKE="" compose --profile scale --profile monitoring up -d --no-build --no-deps prometheus; fail "prometheus up"; }
up=""
for _ in $(seq 60); do
    up=$(promql 'count(up{job="convzoo"} == 1)')
    [ "$up" = 2 ] && break
    sleep 2
done
[ "$up" = 2 ] || fail "Prometheus reports ${up:-no} replica(s) up, expected 2"
rules=$(python3 -c '
import json, sys, urllib.request
groups = json.load(urllib.request.urlopen(sys.argv[1] + "/api/v1/rules", timeout=5))["data"]["groups"]
print(sum(len(g["rules"]) for g in groups))' "http://127.0.0.1:$PROMETHEUS_PORT_SMOKE")
[ "${rules:-0}" -gt 0 ] || fail "Prometheus loaded no rules"
before=$(promql 'sum(convzoo_requests_total{route="/classify"})')
out=$(classify "$lb_url" 20) || fail "classify for the Prometheus check: $out"
after=$before
for _ in $(seq 30); do
    after=$(promql 'sum(convzoo_requests_total{route="/classify"})')
    python3 -c 'import sys; sys.exit(0 if float(sys.argv[2] or 0) >= float(sys.argv[1] or 0) + 20 else 1)' "$before" "$after" \
        && break
    sleep 2
done
python3 -c 'import sys; sys.exit(0 if float(sys.argv[2] or 0) >= float(sys.argv[1] or 0) + 20 else 1)' "$before" "$after" \
    || fail "sum(convzoo_requests_total{route=\"/classify\"}) went from ${before:-none} to ${after:-none} after 20 requests"
log "Prometheus: 2 replicas up, $rules rules loaded, /classify requests ${before:-0} -> $after after 20 more"

# --- teardown ----------------------------------------------------------------------------------
log "down -v"
compose --profile scale --profile export --profile monitoring down -v --remove-orphans --timeout 30 >/dev/null 2>&1
[ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ] || fail "containers left behind"
[ -z "$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")" ] || fail "volumes left behind"
[ -z "$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")" ] || fail "networks left behind"
log "nothing left running"
