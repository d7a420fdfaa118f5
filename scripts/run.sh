#!/usr/bin/env bash
# `make run`: the whole system on this host with the embedded local backend.
# Starts dockerd if none answers, then esx_service and the plugin in the foreground.
# Ctrl-C stops the plugin and the service; mounted volumes stay mounted for the containers
# that use them, and dockerd keeps running.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export DOCKVOLS_SOCKET=${DOCKVOLS_SOCKET:-/run/dockvols/esx.sock}
export DOCKVOLS_ESX_ADDRESS=${DOCKVOLS_ESX_ADDRESS:-unix://$DOCKVOLS_SOCKET}
DRIVER=${DOCKVOLS_DRIVER_NAME:-vsphere}
LOGDIR=${DOCKVOLS_LOG_DIR:-/var/log/dockvols}
mkdir -p "$LOGDIR"

if [ "$(id -u)" != 0 ]; then echo "make run: needs root (loop devices, mount)" >&2; exit 1; fi

if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "make run: no Docker daemon answers; starting dockerd (log: $LOGDIR/dockerd.log)"
  echo "          with ${DOCKVOLS_DOCKERD_ARGS:=--bridge=none --iptables=false}; it keeps running after Ctrl-C"
  # shellcheck disable=SC2086
  setsid dockerd $DOCKVOLS_DOCKERD_ARGS >"$LOGDIR/dockerd.log" 2>&1 < /dev/null &
  disown
  for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
  docker version --format 'make run: dockerd {{.Server.Version}} is up' \
    || { echo "make run: dockerd did not start, see $LOGDIR/dockerd.log" >&2; exit 1; }
fi
if ! docker image inspect busybox >/dev/null 2>&1 && [ -x /bin/busybox ]; then
  echo "make run: importing a busybox image from busybox-static (no Docker Hub needed)"
  scripts/busybox-image.sh busybox:latest
fi

# Every process started below is ended on Ctrl-C (SIGINT to the whole process group), on
# SIGTERM or SIGHUP to this script alone, and if the script dies of anything else: TERM,
# a bounded wait for in-flight operations, then KILL. dockerd is not ours to stop (setsid,
# disowned, never waited for).
STOP_WAIT=${DOCKVOLS_STOP_WAIT:-45}
pids=()
stopping=0
alive() { for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
stop() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap '' INT TERM HUP  # a second Ctrl-C must not cut the shutdown short
  echo; echo "make run: stopping plugin and esx_service (volumes in use stay mounted)"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq $((STOP_WAIT * 5))); do alive || break; sleep 0.2; done
  if alive; then
    echo "make run: still running after ${STOP_WAIT}s, killed:" >&2
    for p in "${pids[@]}"; do ps -o pid=,args= --pid "$p" --ppid "$p" >&2 || true; done
    for p in "${pids[@]}"; do pkill -KILL -P "$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true; done
  fi
  echo "make run: stopped"
}
trap 'stop; exit 0' INT TERM HUP
trap stop EXIT

# The tee of each log ignores SIGINT: it ends when its process closes stderr, so the lines a
# stopping process writes are kept.
$PY -m esx_service 2> >(trap '' INT TERM; exec tee -a "$LOGDIR/esx_service.log" >&2) &
pids+=($!)
for _ in $(seq 50); do [ -S "$DOCKVOLS_SOCKET" ] && break; sleep 0.1; done
$PY -m plugin 2> >(trap '' INT TERM; exec tee -a "$LOGDIR/plugin.log" >&2) &
pids+=($!)
# the read-only admin page and /metrics (loopback unless DOCKVOLS_WEB_LISTEN says otherwise)
export DOCKVOLS_WEB_LISTEN=${DOCKVOLS_WEB_LISTEN:-127.0.0.1:9440}
$PY -m admin_web 2> >(trap '' INT TERM; exec tee -a "$LOGDIR/admin_web.log" >&2) &
pids+=($!)
for _ in $(seq 50); do [ -S "/run/docker/plugins/$DRIVER.sock" ] && break; sleep 0.1; done
cat <<MSG
make run: dockvols is up. The driver "$DRIVER" is registered at /run/docker/plugins/$DRIVER.sock.
  docker volume create -d $DRIVER -o size=200mb db
  docker run --rm -v db:/data busybox sh -c 'echo hi > /data/f'
Admin page and metrics: http://$DOCKVOLS_WEB_LISTEN/ and http://$DOCKVOLS_WEB_LISTEN/metrics
Logs: $LOGDIR/{esx_service,plugin,admin_web}.log. Ctrl-C to stop.
MSG
# Wait for the processes started here only (a bare `wait` would also wait for a dockerd
# started above); if one exits by itself, stop the others.
while alive; do
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "make run: process $p exited" >&2; exit 1; }; done
  sleep 1
done
