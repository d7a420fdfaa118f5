#!/bin/sh
# Build tests/vcsim/vcsim from main.go with Debian's govmomi simulator library, offline, in
# GOPATH mode. Installs nothing: `make` apt-installs golang-go and
# golang-github-vmware-govmomi-dev. Skips the build when the binary is newer than main.go.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out="$here/vcsim"
gocode=${DOCKVOLS_GOCODE:-/usr/share/gocode}

if [ -x "$out" ] && [ "$out" -nt "$here/main.go" ]; then
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: the 'go' command is missing; install golang-go (make deps does)" >&2
    exit 1
fi
if [ ! -d "$gocode/src/github.com/vmware/govmomi/simulator" ]; then
    echo "build.sh: govmomi simulator source not found under $gocode/src/github.com/vmware/govmomi;" \
         "install golang-github-vmware-govmomi-dev (make deps does)" >&2
    exit 1
fi

# GOPATH mode needs the package inside a GOPATH: a throw-away one holding only main.go.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/dockvols/vcsim"
cp "$here/main.go" "$work/src/dockvols/vcsim/"
cd "$work/src/dockvols/vcsim"
# go's build cache needs a home; without one, use a throw-away cache (a cold build, ~12 s).
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ]; then
    export GOCACHE="$work/cache"
fi
GO111MODULE=off GOPATH="$work:$gocode" go build -o "$out.tmp" . >&2 || {
    echo "build.sh: building vcsim failed (see above)" >&2
    rm -f "$out.tmp"
    exit 1
}
mv "$out.tmp" "$out"
