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
# Another apt or dpkg (unattended-upgrades, a second `make`) may hold the lock: wait for it, up to 10 min,
# rather than fail.
wait_for_lock=(-o DPkg::Lock::Timeout=600)
$sudo apt-get "${wait_for_lock[@]}" update -qq
# policy-rc.d: the package must not start a Prometheus service on this machine; only promtool is used.
policy=/usr/sbin/policy-rc.d
added=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && added=1
fi
DEBIAN_FRONTEND=noninteractive $sudo apt-get "${wait_for_lock[@]}" install -y -qq --no-install-recommends prometheus
[ "$added" -eq 0 ] || $sudo rm -f "$policy"
