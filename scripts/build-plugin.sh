#!/usr/bin/env bash
# `make plugin`: build the dockvols managed plugin and `docker plugin create` it.
#
#   build/plugin/config.json + build/plugin/rootfs/   the plugin directory
#   build/cache/base-<key>/                           debootstrap tree, reused while its inputs
#                                                     (suite, mirror, packages) do not change
#   build/cache/wheels/                               the plugin's project and its deps, built
#                                                     on the host with .venv/bin/pip wheel
#
# The rootfs is Debian bookworm (debootstrap --variant=minbase from the mirror this machine's
# apt uses: scripts/debian_mirror.py reads /etc/apt/sources.list(.d), and apt's proxy
# setting is passed on) with the
# tools the plugin runs (mount, blkid, mkfs.ext4, mkfs.xfs) and a venv in /opt/dockvols
# installed with --no-index from those wheels; the versions are the ones in .venv. The venv
# holds the guest's half only: scripts/plugin_project.py makes a project of plugin/ and
# dockvols_common/ with the `plugin` extra's dependencies, so no esx_service, admin_web or
# pyVmomi is in the image.
# File times are clamped to SOURCE_DATE_EPOCH (the last commit) and caches, logs and docs
# are dropped, so the same inputs give the same tree.
#
# Environment: PLUGIN_NAME (vsphere, i.e. vsphere:latest, so `-d vsphere` finds it; give
# vsphere:<version> to keep several side by side), ENABLE=1 to enable after create,
# DOCKER_HOST, DEBIAN_MIRROR (default: apt's own), BUILD_DIR (build), CREATE=0 to build the
# directory only. A plugin of the same name is replaced (disable, rm, create, set, enable),
# keeping its settings and enabled state, unless a volume of it is in use: then nothing is
# touched and one line says what to do.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=$REPO/.venv/bin/python
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' dockvols_common/__init__.py)
PLUGIN_NAME=${PLUGIN_NAME:-vsphere}
BUILD_DIR=${BUILD_DIR:-$REPO/build}
MIRROR=${DEBIAN_MIRROR:-$(python3 "$REPO/scripts/debian_mirror.py")} \
  || { echo "build-plugin: set DEBIAN_MIRROR to a Debian archive" >&2; exit 1; }
SUITE=bookworm
PACKAGES=python3,python3-venv,util-linux,mount,e2fsprogs,xfsprogs,libblkid1
OUT=$BUILD_DIR/plugin
CACHE=$BUILD_DIR/cache
VENV_DIR=/opt/dockvols

say() { echo "build-plugin: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root (debootstrap, chroot)"; exit 1; }
[ -x "$PY" ] || { say "no $PY: run 'make venv' first"; exit 1; }
command -v debootstrap >/dev/null || { say "debootstrap missing: run scripts/install-deps.sh"; exit 1; }
# apt's proxy (Acquire::http::Proxy), so debootstrap reaches the mirror the way apt does
if [ -z "${http_proxy:-}" ] && command -v apt-config >/dev/null; then
  eval "$(apt-config shell APT_HTTP_PROXY Acquire::http::Proxy)"
  if [ -n "${APT_HTTP_PROXY:-}" ]; then export http_proxy=$APT_HTTP_PROXY; fi
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
started=$(date +%s)
mkdir -p "$CACHE"

# 1. the Debian base tree, cached by its inputs
key=$(printf '%s\n' "$SUITE" "$MIRROR" "$PACKAGES" minbase | sha256sum | cut -c1-12)
base=$CACHE/base-$key
if [ ! -f "$base/.complete" ]; then
  say "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR into $base"
  rm -rf "$base" "$base.tmp"
  debootstrap --variant=minbase --include="$PACKAGES" --components=main \
    "$SUITE" "$base.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE/debootstrap.log" >&2; say "debootstrap failed"; exit 1; }
  chroot "$base.tmp" apt-get clean
  rm -rf "$base.tmp"/var/lib/apt/lists/* "$base.tmp"/var/cache/apt/* \
    "$base.tmp"/var/cache/debconf/*-old "$base.tmp"/var/lib/dpkg/*-old \
    "$base.tmp"/usr/share/doc/* "$base.tmp"/usr/share/man/* "$base.tmp"/usr/share/info/* \
    "$base.tmp"/usr/share/locale/* "$base.tmp"/usr/share/lintian "$base.tmp"/usr/share/linda \
    "$base.tmp"/var/log/* "$base.tmp"/var/cache/ldconfig/aux-cache "$base.tmp"/etc/machine-id \
    "$base.tmp"/etc/hostname "$base.tmp"/root/.cache
  : > "$base.tmp/etc/machine-id"
  touch "$base.tmp/.complete"
  mv "$base.tmp" "$base"
else
  say "reusing $base"
fi

# 2. wheels of the plugin's project (plugin/ + dockvols_common/) and its dependencies, pinned
#    to the versions in .venv
wheels=$CACHE/wheels
project=$CACHE/plugin-project
mkdir -p "$wheels"
rm -rf "$wheels"/dockvols-*.whl "$wheels"/dockvols_plugin-*.whl "$project"
"$PY" "$REPO/scripts/plugin_project.py" "$REPO" "$project"
"$PY" -m pip freeze --exclude-editable >"$CACHE/constraints.txt"
"$PY" -m pip wheel -q --wheel-dir "$wheels" -c "$CACHE/constraints.txt" "$project" \
  >"$CACHE/pip-wheel.log" 2>&1 || { cat "$CACHE/pip-wheel.log" >&2; say "pip wheel failed"; exit 1; }
rm -rf "$project"

# 3. the rootfs: a copy of the base tree plus the venv
rootfs=$OUT/rootfs
rm -rf "$OUT"
mkdir -p "$OUT"
cp -a "$base" "$rootfs"
rm -f "$rootfs/.complete"
mkdir -p "$rootfs/tmp/wheels" "$rootfs/run/dockvols" "$rootfs/var/lib/dockvols/plugin" \
  "$rootfs/mnt/vmdk" "$rootfs/run/docker/plugins"
cp "$wheels"/*.whl "$rootfs/tmp/wheels/"
inroot() {  # a clean environment: the host's pip settings (mirrors, find-links) stay out
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PYTHONHASHSEED=0 \
    chroot "$rootfs" "$@"
}
inroot python3 -m venv "$VENV_DIR"
inroot "$VENV_DIR/bin/python" -m pip install -q --no-index --no-cache-dir \
  --disable-pip-version-check --find-links /tmp/wheels dockvols-plugin
inroot "$VENV_DIR/bin/python" -m pip uninstall -q -y --disable-pip-version-check setuptools pip
rm -rf "$rootfs/tmp/wheels" "$rootfs/root/.cache" "$rootfs/usr/share/python-wheels"
# Byte-code with hash-based, unchecked invalidation: independent of file times (so these can
# be clamped below) and never recompiled at start (the plugin must bind within ~9.5 s).
inroot "$VENV_DIR/bin/python" -m compileall -q -f \
  --invalidation-mode unchecked-hash /usr/lib/python3.11 /usr/lib/python3/dist-packages \
  "$VENV_DIR/lib" >/dev/null
find "$rootfs" -xdev -newermt "@$SOURCE_DATE_EPOCH" -print0 \
  | xargs -0r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"
cp "$REPO/config.json" "$OUT/config.json"
# Growing a mounted ext4 filesystem (resize2fs online) needs CAP_SYS_RESOURCE. Docker refuses
# to start a plugin asking for a capability outside the host's bounding set, so it is added
# only where the build host has it (EXT4_ONLINE_GROW=0 leaves it out); without it, ext4
# volumes grow at their next mount, and xfs ones online all the same.
caps_bound=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
if [ "${EXT4_ONLINE_GROW:-1}" != 0 ] && (( (16#$caps_bound >> 24) & 1 )); then
  python3 - "$OUT/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
caps = config["linux"]["capabilities"]
if "CAP_SYS_RESOURCE" not in caps:
    caps.append("CAP_SYS_RESOURCE")
json.dump(config, open(path, "w"), indent=2)
PY
fi
say "rootfs $(du -sh "$rootfs" | cut -f1) in $OUT ($(( $(date +%s) - started ))s)"

# 4. docker plugin create (and enable), replacing one of the same name
if [ "${CREATE:-1}" = 0 ]; then exit 0; fi
restore=()
if docker plugin inspect "$PLUGIN_NAME" >/dev/null 2>&1; then
  was_enabled=$(docker plugin inspect -f '{{.Enabled}}' "$PLUGIN_NAME")
  # what `docker plugin set` changed survives the replacement: settable env and mount sources
  settings=$(docker plugin inspect "$PLUGIN_NAME" | python3 -c '
import json, sys
config = json.load(open(sys.argv[1]))
settings = json.load(sys.stdin)[0]["Settings"]
env = {e["name"] for e in config["env"] if "value" in e.get("settable", [])}
mounts = {m["name"] for m in config["mounts"] if "source" in m.get("settable", [])}
for line in settings["Env"]:
    if line.split("=", 1)[0] in env:
        print(line)
for m in settings["Mounts"]:
    if m.get("Name") in mounts:
        print(m["Name"] + ".source=" + m["Source"])
' "$REPO/config.json")
  mapfile -t restore <<<"$settings"
  if [ "$was_enabled" = true ] && ! docker plugin disable "$PLUGIN_NAME" >/dev/null 2>"$CACHE/disable.err"; then
    say "plugin $PLUGIN_NAME is in use ($(tr -d '\n' <"$CACHE/disable.err")): stop the containers using its volumes, or run 'docker plugin disable -f $PLUGIN_NAME', then 'make plugin' again"
    exit 1
  fi
  docker plugin rm "$PLUGIN_NAME" >/dev/null
  say "removed the previous $PLUGIN_NAME (was enabled: $was_enabled)"
  if [ "$was_enabled" = true ]; then ENABLE=1; fi
fi
docker plugin create "$PLUGIN_NAME" "$OUT" >/dev/null
if [ -n "${restore[*]}" ]; then
  docker plugin set "$PLUGIN_NAME" "${restore[@]}" >/dev/null
fi
base_name=${PLUGIN_NAME%%:*}
base_name=${base_name##*/}
if [ "$base_name" != vsphere ]; then  # recovery finds its volumes in containers by this name
  docker plugin set "$PLUGIN_NAME" DOCKVOLS_DRIVER_NAME="$base_name"
fi
say "created plugin $PLUGIN_NAME, dockvols $VERSION ($(( $(date +%s) - started ))s)"
if [ "${ENABLE:-0}" = 1 ]; then
  case "${DOCKER_HOST:-unix://}" in  # the default mount sources must exist on this host
    unix://*) mkdir -p /run/dockvols /var/lib/dockvols/plugin ;;
  esac
  docker plugin enable --timeout 120 "$PLUGIN_NAME" >/dev/null
  say "enabled $PLUGIN_NAME"
fi
