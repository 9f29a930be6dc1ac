#!/usr/bin/env bash
# Debian packages whose photographs widen the real-image pool (see docs in README, "Real-image pool").
# Idempotent: does nothing when they are installed; warns (does not fail) when apt is unavailable.
set -euo pipefail
pkgs=(mate-backgrounds lomiri-wallpapers-16.04 opencv-doc)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing photo packages for the real-image pool: ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "warning: ${missing[*]} not installed (need root + apt); the pool uses package-bundled photos only" >&2
fi
