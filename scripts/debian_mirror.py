#!/usr/bin/env python3
"""Print the Debian archive this machine's apt uses, for debootstrap.

`make plugin` builds from the same mirror apt installs from (a proxy, a local mirror, a
snapshot), so the build works wherever `apt-get install` works. Reads one-line `.list`
files and deb822 `.sources` files; picks the first `deb` entry with the `main` component and
a Debian release suite (not -security, -updates, nor a third party's). Exit 1 when none is found.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

# Release suites only: a third-party repository (nodesource's "nodistro", a cloud SDK) also
# lists "main" but cannot debootstrap Debian.
DEBIAN_SUITES = {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
                 "oldoldstable", "oldstable", "stable", "testing", "unstable"}


def one_line_entries(text: str) -> Iterator[tuple[str, list[str], list[str]]]:
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) < 4 or words[0] != "deb":
            continue
        words = words[1:]
        if words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 3:
            yield words[0], [words[1]], words[2:]


def deb822_entries(text: str) -> Iterator[tuple[str, list[str], list[str]]]:
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split(), fields.get("components", "").split()


def find_mirror(etc_apt: Path) -> str | None:
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    for path in files:
        if path.suffix == ".list" or path.name == "sources.list":
            parse = one_line_entries
        elif path.suffix == ".sources":
            parse = deb822_entries
        else:
            continue  # *.disabled, *.save and friends are not read by apt either
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri, suites, components in parse(text):
            if DEBIAN_SUITES.intersection(suites) and "main" in components:
                return uri.rstrip("/")
    return None


def main(argv: list[str]) -> int:
    etc_apt = Path(argv[1]) if len(argv) > 1 else Path("/etc/apt")
    mirror = find_mirror(etc_apt)
    if mirror is None:
        print(f"no Debian 'deb ... main' entry in {etc_apt}/sources.list(.d)", file=sys.stderr)
        return 1
    print(mirror)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
