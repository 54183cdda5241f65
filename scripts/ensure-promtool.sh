#!/usr/bin/env bash
# The Prometheus rules (deploy/prometheus) are checked by `promtool`, from Debian's package prometheus;
# install it when missing. Without apt (not Debian), say so: the rules tests then skip with that reason.
set -euo pipefail
command -v promtool >/dev/null && exit 0
if ! command -v apt-get >/dev/null; then
    echo "promtool not found and no apt-get to install it (Debian package prometheus): the rules tests skip" >&2
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "promtool not found: installing the prometheus package" >&2
$sudo apt-get update -qq
# policy-rc.d: the package must not start a Prometheus service on this machine; only promtool is used.
policy=/usr/sbin/policy-rc.d
added=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && added=1
fi
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus
[ "$added" -eq 0 ] || $sudo rm -f "$policy"
