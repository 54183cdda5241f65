#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (package chromium) through Playwright; install it when missing.
# Playwright never downloads a browser here: the tests launch /usr/bin/chromium.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "Chromium not found at /usr/bin/chromium: installing the chromium package" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
