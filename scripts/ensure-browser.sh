#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (package chromium) through Playwright; install it when missing.
# Playwright never downloads a browser here: the tests launch /usr/bin/chromium.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "Chromium not found at /usr/bin/chromium: installing the chromium package" >&2
# Another apt or dpkg (unattended-upgrades, a second `make`) may hold the lock: wait for it, up to 10 min,
# rather than fail.
wait_for_lock=(-o DPkg::Lock::Timeout=600)
$sudo apt-get "${wait_for_lock[@]}" update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get "${wait_for_lock[@]}" install -y -qq chromium
