#!/usr/bin/env bash
# Debian packages: photographs that widen the real-image pool (see README, "Real-image pool"), and the headless
# Chromium that the web page's browser test drives (tests/test_service_browser.py, through Playwright).
# Idempotent: installs only what is missing; warns (does not fail) when root or apt is unavailable.
set -euo pipefail

install_missing() {  # install_missing "what they are for" package...
  local why=$1; shift
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${why}: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: ${missing[*]} not installed (need root + apt); ${why} unavailable" >&2
  fi
}

install_missing "photo packages for the real-image pool (otherwise package-bundled photos only)" \
  mate-backgrounds lomiri-wallpapers-16.04 opencv-doc
install_missing "headless Chromium for the web page's browser test" chromium chromium-driver
