#!/usr/bin/env bash
# Build a busybox image from Debian's busybox-static with `docker import` (no registry).
set -euo pipefail
tag=${1:-busybox:latest}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc"
cp /bin/busybox "$dir/bin/busybox"
for cmd in $("$dir/bin/busybox" --list); do
  [ "$cmd" = busybox ] || ln -s busybox "$dir/bin/$cmd"
done
echo "root:x:0:0:root:/root:/bin/sh" > "$dir/etc/passwd"
tar -C "$dir" -c . | docker import -c 'CMD ["sh"]' - "$tag" >/dev/null
echo "imported $tag"
