#!/usr/bin/env bash
# wrk (Debian package) drives the benchmark; without it the bench falls back to its Python load generator.
set -uo pipefail
command -v wrk >/dev/null && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "wrk not found: installing the wrk package (the bench falls back to a Python load generator if this fails)" >&2
{ $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk; } || true
exit 0
