#!/usr/bin/env bash
# Fashion-MNIST comes from Debian's dataset-fashion-mnist package; install it when missing.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
[ -f "$dir/t10k-images-idx3-ubyte.gz" ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "Fashion-MNIST not found in $dir: installing the dataset-fashion-mnist package" >&2
# Another apt or dpkg (unattended-upgrades, a second `make`) may hold the lock: wait for it, up to 10 min,
# rather than fail.
wait_for_lock=(-o DPkg::Lock::Timeout=600)
$sudo apt-get "${wait_for_lock[@]}" update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get "${wait_for_lock[@]}" install -y -qq dataset-fashion-mnist
