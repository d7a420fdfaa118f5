#!/usr/bin/env bash
# Install what dockvols needs on Debian, only what is missing (so a second run is instant).
# Needs root for apt; set DOCKVOLS_SKIP_APT=1 to skip the apt part.
set -euo pipefail
PACKAGES=(docker.io docker-compose qemu-utils xfsprogs e2fsprogs util-linux busybox-static curl
          golang-go golang-github-vmware-govmomi-dev debootstrap
          chromium chromium-driver)  # the admin page's browser test
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ] && [ "${DOCKVOLS_SKIP_APT:-0}" != 1 ]; then
  echo "dockvols: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "dockvols: run as root to install packages" >&2; exit 1; fi
  if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; then apt-get update -q; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
         --no-install-recommends "${missing[@]}"; }
fi
