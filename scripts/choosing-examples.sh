#!/usr/bin/env bash
# The examples of docs/choosing.md, against a running service (make run): model=auto, /compare, the
# frontier, and the live latency that replaces the calibration under load. Needs curl and jq.
set -euo pipefail
BASE="http://${CONVZOO_HOST:-127.0.0.1}:${CONVZOO_PORT:-8000}"
PY="${PYTHON:-python3}"
IMG="$(mktemp -d)/boot.png"
# Fashion-MNIST test image 0 (an ankle boot), as a PNG.
"$PY" - "$IMG" <<'PYEOF'
import gzip, sys
import numpy as np
from PIL import Image
raw = gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").read()
Image.fromarray(np.frombuffer(raw, np.uint8, offset=16)[:784].reshape(28, 28)).save(sys.argv[1])
PYEOF
post() { curl -s -X POST "$BASE$1" -H 'content-type: image/png' --data-binary @"$IMG"; }
considered='(.selection.considered[] | {name, top1, latency_ms, latency_source, size_mb, failed: [.failed[].detail]})'

echo '$ POST /classify?model=auto&dataset=fashion-mnist&max_latency_ms=0.1&top_k=3'
post '/classify?model=auto&dataset=fashion-mnist&max_latency_ms=0.1&top_k=3' \
  | jq -c "{model, prediction: .results[0].predictions[0].label, reason: .selection.reason}, $considered"

echo; echo '$ POST /classify?model=auto&dataset=fashion-mnist&max_latency_ms=0.18&max_size_mb=1.2&min_top1=0.9'
post '/classify?model=auto&dataset=fashion-mnist&max_latency_ms=0.18&max_size_mb=1.2&min_top1=0.9' \
  | jq -c '{model, constraints: .selection.constraints}, (.selection.considered[] | {name, fits, failed: [.failed[].detail]})'

echo; echo '$ POST /classify?model=auto&dataset=fashion-mnist&min_top1=0.92&max_latency_ms=0.05'
curl -s -o /dev/null -w 'HTTP %{http_code} %{content_type}\n' -X POST "$BASE/classify?model=auto&dataset=fashion-mnist&min_top1=0.92&max_latency_ms=0.05" \
  -H 'content-type: image/png' --data-binary @"$IMG"
post '/classify?model=auto&dataset=fashion-mnist&min_top1=0.92&max_latency_ms=0.05' \
  | jq -c '{type, status, detail}, (.closest[] | {name, top1, latency_ms, failed: [.failed[].detail]})'

echo; echo '$ POST /compare?models=fmnist-lenet5,fmnist-alexnet,fmnist-resnet-v2,fmnist-vgg16&top_k=3'
post '/compare?models=fmnist-lenet5,fmnist-alexnet,fmnist-resnet-v2,fmnist-vgg16&top_k=3' \
  | jq -c '(.models[] | {model, top3: [.predictions[] | "\(.label) \(.score * 1000 | round / 1000)"], timing_ms}),
           (.agreement | del(.pairwise)), (.agreement.pairwise[] | select(.same_top1))'

echo; echo '$ POST /compare?models=all&dataset=fashion-mnist&top_k=1'
post '/compare?models=all&dataset=fashion-mnist&top_k=1' \
  | jq -c '[.models[] | "\(.model): \(.predictions[0].label // .error.detail)"], (.agreement | {answered, top1, share_top1, pairwise_top1_agreement})'

for x in latency size gflops; do
  echo; echo "\$ GET /models/pareto?dataset=fashion-mnist&x=$x"
  curl -s "$BASE/models/pareto?dataset=fashion-mnist&x=$x" | jq -c '{x, unit, frontier: [.frontier[] | "\(.name): \(.cost) -> top-1 \(.top1)"]}'
done

echo; echo '$ 400 concurrent POST /classify?model=fmnist-vgg16, then model=auto&dataset=fashion-mnist&max_latency_ms=0.1 again'
seq 400 | xargs -P 16 -I{} curl -s -o /dev/null -X POST "$BASE/classify?model=fmnist-vgg16" \
  -H 'content-type: image/png' --data-binary @"$IMG"
post '/classify?model=auto&dataset=fashion-mnist&max_latency_ms=0.1' \
  | jq -c "{model, reason: .selection.reason}, ($considered | select(.name == \"fmnist-vgg16\" or (.failed | length) == 0))"
