"""``dockvols-admin volume import``: adopt one VMDK (``--path``) or every vDVS volume
(``--from-vdvs``); the work is done by the service (``esx_service.admin.importer``)."""

from __future__ import annotations

import argparse

from .client import AdminClient

Result = tuple[object, str]


def volume_import(c: AdminClient, a: argparse.Namespace) -> Result:
    if a.from_vdvs:
        if a.path or a.name:
            raise argparse.ArgumentTypeError("--from-vdvs takes no --path or --name")
        reply = c.call("POST", "imports/vdvs", {"datastore": a.datastore,
                                                "dry_run": a.dry_run})
        return reply, vdvs_report(reply["volumes"], reply["dry_run"])
    if not a.path or not a.name:
        raise argparse.ArgumentTypeError("volume import needs --path and --name "
                                         "(or --from-vdvs)")
    reply = c.call("POST", "imports", {"path": a.path, "name": a.name,
                                       "vmgroup": a.vmgroup})
    v = reply["volume"]
    return reply, (f"imported {a.path} as volume {v['name']} of vmgroup {v['vmgroup']} "
                   f"({v['capacity_mb']}mb, {v['diskformat']}); its filesystem is probed at "
                   "the first mount and never reformatted")


def vdvs_report(lines: list[dict], dry_run: bool) -> str:
    out = []
    for line in lines:
        if line["outcome"] == "skipped":
            out.append(f"skipped {line['path']}: {line['reason']}")
        else:
            notes = "; ".join(line.get("notes") or [])
            out.append(f"{line['outcome']} {line['path']} as {line['volume']}@"
                       f"{line['datastore']} (vmgroup {line['vmgroup']}; {notes})")
    adopted = sum(1 for line in lines if line["outcome"] != "skipped")
    verb = "would adopt" if dry_run else "adopted"
    out.append(f"{verb} {adopted}, skipped {len(lines) - adopted} "
               f"(of {len(lines)} VMDK files found in dockvols/ folders)")
    return "\n".join(out)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", metavar='"[DATASTORE] FOLDER/DISK.vmdk"',
                   help="the VMDK descriptor to adopt (it moves into dockvols' folder on "
                        "its datastore)")
    p.add_argument("--name", help="the volume name it gets (name or name@datastore)")
    p.add_argument("--vmgroup", help="the vmgroup owning it (default _DEFAULT)")
    p.add_argument("--from-vdvs", action="store_true",
                   help="adopt every volume vDVS left in dockvols/_DEFAULT and its "
                        "per-vmgroup folders")
    p.add_argument("--datastore", help="with --from-vdvs: only this datastore")
    p.add_argument("--dry-run", action="store_true",
                   help="with --from-vdvs: say what would happen, change nothing")
