"""How a volume name becomes a file name on a datastore: readable, injective, safe.

Volume names may hold spaces, symbols and letters of any script (``names``); file names on
VMFS, VSAN and NFS, in ``[ds] path`` strings and in the datastore ``/folder`` HTTP interface
are safest in ``[A-Za-z0-9_.~-]``. So:

- a name that was already valid before (``[A-Za-z0-9][A-Za-z0-9_.-]*``) is its own file
  stem: every existing volume keeps its files;
- any other name keeps its ``[A-Za-z0-9_.-]`` characters and writes every other character
  (and a first character that is not a letter or digit, so no stem starts with ``.`` or
  ``-``) as its UTF-8 bytes, each ``~xx`` in lowercase hex: ``my vol`` -> ``my~20vol``,
  ``café`` -> ``caf~c3~a9``. Old names never hold ``~``, new ones always do, and ``~`` is
  always followed by exactly two lowercase hex digits, so decoding is unambiguous: two
  different names never share a stem;
- a stem longer than ``MAX_STEM`` (100 characters of a non-Latin script can take 900) is cut
  at an escape boundary and ends in ``~~`` plus 128 bits of the name's SHA-256. ``~~`` never
  occurs in a readable stem, so a long name can only meet another long name, with the
  odds of a SHA-256 collision. Such a stem cannot be decoded; the metadata holds the name.

Case: stems keep ASCII letters as typed and write hex in lowercase only. On a datastore
whose file system ignores case (some NFS servers), ``Db`` and ``db`` still meet: the volume
layer notices that the metadata it opened names another volume and refuses.
"""

from __future__ import annotations

import hashlib
import re

ESCAPE = "~"
HASH_MARK = "~~"
# 255 bytes is the file-name limit on VMFS, VSAN and NFS; leave room for "-sesparse.vmdk",
# the metadata file's temporary ".<stem>.json.tmp" and the like.
MAX_STEM = 180
_HASH_HEX = 32
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_KEPT = _ALNUM | frozenset("_.-")
_LEGACY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SAFE_STEM = re.compile(r"[A-Za-z0-9~][A-Za-z0-9_.~-]*")
_ESCAPED_BYTE = re.compile(r"~([0-9a-f]{2})")


def file_stem(name: str) -> str:
    """The file stem (without ``.vmdk``/``.json``) of a validated volume name."""
    if _LEGACY.fullmatch(name):
        return name
    out = []
    for i, ch in enumerate(name):
        if ch in _KEPT and (i > 0 or ch in _ALNUM):
            out.append(ch)
        else:
            out.extend(f"{ESCAPE}{b:02x}" for b in ch.encode("utf-8"))
    stem = "".join(out)
    if len(stem) <= MAX_STEM:
        return stem
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_HASH_HEX]
    cut = MAX_STEM - len(HASH_MARK) - _HASH_HEX
    # never cut inside an escape: "~c3~a" + "~~..." would read as a different stem
    escape_at = stem.rfind(ESCAPE, cut - 2, cut)
    if escape_at != -1:
        cut = escape_at
    return stem[:cut] + HASH_MARK + digest


def is_hashed(stem: str) -> bool:
    return HASH_MARK in stem


def name_of_stem(stem: str) -> str | None:
    """The volume name a readable stem encodes; None for a hashed stem or one this module
    would not have written (so a stray file is never taken for a volume)."""
    if is_hashed(stem) or not SAFE_STEM.fullmatch(stem):
        return None
    if ESCAPE not in stem:
        return stem if _LEGACY.fullmatch(stem) else None
    data = bytearray()
    i = 0
    while i < len(stem):
        if stem[i] == ESCAPE:
            match = _ESCAPED_BYTE.match(stem, i)
            if not match:
                return None
            data.append(int(match.group(1), 16))
            i = match.end()
        else:
            data.extend(stem[i].encode("ascii"))
            i += 1
    try:
        name = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name if file_stem(name) == stem else None  # only the canonical spelling
