"""``dockvols-admin``: the administrator's client of the admin API on its unix socket.

Standard library only, so it runs on ESXi. Human tables by default, ``--json`` for scripts;
errors print as ``dockvols-admin: <code>: <message>`` and exit 1, usage errors exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from urllib.parse import quote

from dockvols_common.cli import Result, run_main
from dockvols_common.sizes import size_text

from ..errors import DockvolsError
from . import import_cli, tables
from .client import AdminClient, NotJson, Refused, Unreachable
from .db import AdminDb
from .progress import run_with_progress

DEFAULT_SOCKET = "/run/dockvols/admin.sock"
DEFAULT_DB = "/var/lib/dockvols/dockvols.db"
TIMEOUT_S = 600.0  # vmgroup rm --remove-volumes deletes disks one after another


class CliError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _seg(value: str) -> str:
    return quote(value, safe="")


def _group(args: argparse.Namespace) -> str:
    return "vmgroups/" + _seg(args.name)


def _vm_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _key_values(value: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        key, sep, val = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE")
        pairs[key.strip()] = val.strip()
    return pairs


def _columns(value: str) -> list[tables.Column]:
    try:
        return tables.parse_columns(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _bool(value: str) -> bool:
    if value.lower() in ("true", "yes", "on", "1"):
        return True
    if value.lower() in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not true or false")


def _pairs(items: list[tuple[str, object]]) -> str:
    width = max(len(k) for k, _ in items) + 1
    return "\n".join(f"{k + ':':<{width}} {v}" for k, v in items)


# -- commands: each returns (json data, text) -----------------------------------------
def volume_ls(c: AdminClient, a: argparse.Namespace) -> Result:
    query = {k: v for k, v in (("datastore", a.datastore), ("vmgroup", a.vmgroup)) if v}
    reply = c.call("GET", "volumes", query=query)
    columns = a.columns or list(tables.VOLUME_COLUMNS.values())
    text = tables.render(columns, reply["volumes"])
    return reply, text + "\n\n" + tables.render(tables.TOTAL_COLUMNS, reply["totals"])


def volume_set(c: AdminClient, a: argparse.Namespace) -> Result:
    reply = c.call("PUT", f"vmgroups/{_seg(a.vmgroup)}/volumes/{_seg(a.volume)}",
                   {"options": a.options})
    settings = ", ".join(f"{k}={v}" for k, v in a.options.items())
    note = f" ({reply['note']})" if reply.get("note") else ""
    return reply, f"volume {reply['volume']['name']} of vmgroup {a.vmgroup}: {settings}{note}"


def volume_resize(c: AdminClient, a: argparse.Namespace) -> Result:
    reply = c.call("POST", f"vmgroups/{_seg(a.vmgroup)}/volumes/{_seg(a.volume)}/resize",
                   {"size": a.size})
    volume = reply["volume"]
    before, after = reply["previous_capacity_mb"], volume["capacity_mb"]
    head = (f"volume {volume['name']} of vmgroup {volume['vmgroup']} is already "
            f"{size_text(after)}" if before == after else
            f"volume {volume['name']} of vmgroup {volume['vmgroup']} grown from "
            f"{size_text(before)} to {size_text(after)}")
    return reply, f"{head}; {reply['filesystem']}"


def vmgroup_create(c: AdminClient, a: argparse.Namespace) -> Result:
    reply = c.call("POST", "vmgroups", {"name": a.name, "description": a.description,
                                        "default_datastore": a.default_datastore,
                                        "vms": a.vm_list})
    return reply, f"vmgroup {reply['vmgroup']['name']} created"


def vmgroup_update(c: AdminClient, a: argparse.Namespace) -> Result:
    body = {k: v for k, v in (("new_name", a.new_name), ("description", a.description),
                              ("default_datastore", a.default_datastore)) if v is not None}
    reply = c.call("PUT", _group(a), body)
    return reply, f"vmgroup {reply['vmgroup']['name']} updated"


def vmgroup_rm(c: AdminClient, a: argparse.Namespace) -> Result:
    reply = c.call("DELETE", _group(a), query={"remove_volumes": "true"}
                   if a.remove_volumes else None)
    removed = reply["removed_volumes"]
    return reply, f"vmgroup {a.name} removed" + (
        f" with {len(removed)} volume(s): {', '.join(removed)}" if removed else "")


def vmgroup_ls(c: AdminClient, a: argparse.Namespace) -> Result:
    reply = c.call("GET", "vmgroups")
    return reply, tables.render(tables.VMGROUP_COLUMNS, reply["vmgroups"])


def vm_add(c: AdminClient, a: argparse.Namespace) -> Result:
    reply = c.call("POST", _group(a) + "/vms", {"vms": a.vm_list})
    return reply, f"VM(s) {', '.join(a.vm_list)} added to vmgroup {a.name}"


def vm_rm(c: AdminClient, a: argparse.Namespace) -> Result:
    reply: dict = {}
    for vm in a.vm_list:  # one at a time: an error names the VM it stopped at
        reply = c.call("DELETE", f"{_group(a)}/vms/{_seg(vm)}")
    return reply, f"VM(s) {', '.join(a.vm_list)} removed from vmgroup {a.name}"


def vm_ls(c: AdminClient, a: argparse.Namespace) -> Result:
    reply = c.call("GET", _group(a) + "/vms")
    return reply, tables.format_table(["VM"], [[vm] for vm in reply["vms"]])


def access_add(c: AdminClient, a: argparse.Namespace) -> Result:
    reply = c.call("POST", _group(a) + "/access", {
        "datastore": a.datastore, "allow_create": a.allow_create,
        "volume_maxsize": a.volume_maxsize, "volume_totalsize": a.volume_totalsize})
    return reply, f"access rule for datastore {reply['access']['datastore']} added to {a.name}"


def access_set(c: AdminClient, a: argparse.Namespace) -> Result:
    body = {k: v for k, v in (("allow_create", a.allow_create),
                              ("volume_maxsize", a.volume_maxsize),
                              ("volume_totalsize", a.volume_totalsize)) if v is not None}
    reply = c.call("PUT", f"{_group(a)}/access/{_seg(a.datastore)}", body)
    return reply, f"access rule for datastore {reply['access']['datastore']} of {a.name} set"


def access_rm(c: AdminClient, a: argparse.Namespace) -> Result:
    reply = c.call("DELETE", f"{_group(a)}/access/{_seg(a.datastore)}")
    return reply, f"access rule for datastore {a.datastore} removed from {a.name}"


def access_ls(c: AdminClient, a: argparse.Namespace) -> Result:
    reply = c.call("GET", _group(a) + "/access")
    return reply, tables.render(tables.ACCESS_COLUMNS, reply["access"])


def policy_create(c: AdminClient, a: argparse.Namespace) -> Result:
    reply = c.call("POST", "policies", {"name": a.name, "content": a.content})
    return reply, f"policy {a.name} created"


def policy_update(c: AdminClient, a: argparse.Namespace) -> Result:
    reply = c.call("PUT", "policies/" + _seg(a.name), {"content": a.content})
    return reply, f"policy {a.name} updated"


def policy_rm(c: AdminClient, a: argparse.Namespace) -> Result:
    return c.call("DELETE", "policies/" + _seg(a.name)), f"policy {a.name} removed"


def policy_ls(c: AdminClient, a: argparse.Namespace) -> Result:
    reply = c.call("GET", "policies")
    return reply, tables.render(tables.POLICY_COLUMNS, reply["policies"])


def config_init(c: AdminClient, a: argparse.Namespace) -> Result:
    # Runs here, not through the service: the DB must be ready before a host's service
    # starts on it, and on a shared datastore path one host prepares it for all.
    existed = os.path.exists(a.db) and os.path.getsize(a.db) > 0
    try:
        db = AdminDb(a.db, shared=a.shared)
    except DockvolsError as exc:
        raise CliError(exc.code, exc.message) from exc
    info = db.info()
    db.close()
    if existed and a.shared and not info["shared"]:
        raise CliError("ConfigError", f"{a.db} already holds a local (not shared) dockvols DB; "
                       "move it away to make a shared one")
    head = (f"{a.db} already holds a dockvols DB; left as it is" if existed
            else f"dockvols DB created at {a.db}")
    mode = "shared by the hosts of a cluster" if info["shared"] else "local to this host"
    text = (f"{head} ({mode}, schema v{info['schema_version']}, journal "
            f"{info['journal_mode']}).\nPoint the service at it: db_path = {info['db_path']} "
            "in [service] of /etc/dockvols/dockvols.conf (or DOCKVOLS_DB)"
            + (" on every host" if info["shared"] else "") + ", then restart it.")
    return {"created": not existed, "config": info}, text


def config_status(c: AdminClient, a: argparse.Namespace) -> Result:
    info = c.call("GET", "config")["config"]
    return {"config": info}, _pairs([
        ("DB", info["db_path"]), ("Mode", "shared" if info["shared"] else "local"),
        ("Journal", info["journal_mode"]), ("Schema", f"v{info['schema_version']}"),
        ("Size", f"{info['size_bytes']} bytes"), ("VMGroups", info["vmgroups"]),
        ("VMs", info["vms"]), ("Access rules", info["access_rules"]),
        ("Policies", info["policies"])])


def status(c: AdminClient, a: argparse.Namespace) -> Result:
    s = c.call("GET", "status")
    hours, rest = divmod(s["uptime_s"], 3600)
    return s, _pairs([
        ("Version", f"dockvols {s['version']}"), ("PID", s["pid"]),
        ("Uptime", f"{hours}h {rest // 60}m {rest % 60}s (since {s['started_at']})"),
        ("Backend", f"{s['backend']} (datastores: {', '.join(s['datastores']) or 'none'})"),
        ("Listeners", ", ".join(s["listeners"]) or "-"), ("Log file", s["log_file"] or "stderr"),
        ("DB", s["db_path"]), ("Config", s["config_source"] or "-")])


# -- parser -----------------------------------------------------------------------------
def _common(at_top: bool) -> argparse.ArgumentParser:
    """--json and --socket, accepted before and after the command. After it they default to
    SUPPRESS so they do not reset what was given before it; argparse shares action objects
    between a parser and its parents, hence one fresh parser for each use."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true",
                        default=False if at_top else argparse.SUPPRESS,
                        help="print the service's JSON answer instead of a table")
    common.add_argument("--socket", help="admin socket (default: $DOCKVOLS_ADMIN_SOCKET or "
                                         f"{DEFAULT_SOCKET})",
                        default=os.environ.get("DOCKVOLS_ADMIN_SOCKET", DEFAULT_SOCKET)
                        if at_top else argparse.SUPPRESS)
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common(at_top=False)
    parser = argparse.ArgumentParser(
        prog="dockvols-admin", parents=[_common(at_top=True)],
        description="Administer dockvols on this host: volumes of every vmgroup, vmgroups "
                    "(tenants) and their VMs, per-datastore access and quotas, VSAN policies, "
                    "the admin DB and the service.")
    top = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def leaf(parent: argparse._SubParsersAction, name: str, run: Callable[..., Result],
             help: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(run=run)
        return p

    def branch(parent: argparse._SubParsersAction, name: str,
               help: str) -> argparse._SubParsersAction:
        p = parent.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")

    vol = branch(top, "volume", "volumes of every vmgroup")
    p = leaf(vol, "ls", volume_ls, "list volumes with usage, and totals per datastore")
    p.add_argument("--datastore", help="only this datastore")
    p.add_argument("--vmgroup", help="only this vmgroup")
    p.add_argument("-c", "--columns", type=_columns, help="comma-separated columns out of: "
                   + ",".join(tables.VOLUME_COLUMNS))
    p = leaf(vol, "set", volume_set, "change options of a volume (at its next attach)")
    p.add_argument("--volume", required=True, metavar="NAME@DATASTORE")
    p.add_argument("--vmgroup", required=True, help="the vmgroup owning the volume")
    p.add_argument("--options", required=True, type=_key_values,
                   help="access=read-write|read-only, attach-as=persistent|"
                        "independent_persistent (comma-separated)")

    p = leaf(vol, "resize", volume_resize, "grow a volume (never shrinks); an attached one "
             "grows online, its filesystem too")
    p.add_argument("--volume", required=True, metavar="NAME[@DATASTORE]",
                   help="without @DATASTORE: the vmgroup's default datastore")
    p.add_argument("--vmgroup", default="_DEFAULT", help="the vmgroup owning the volume "
                   "(default _DEFAULT)")
    p.add_argument("--size", required=True, help="the new size, X[mb|gb|tb], at least the "
                   "current one")

    import_cli.add_parser(leaf(vol, "import", import_cli.volume_import,
                               "adopt an existing VMDK, or every volume vDVS left"))

    grp = branch(top, "vmgroup", "vmgroups (tenants), their VMs and datastore access")
    p = leaf(grp, "create", vmgroup_create, "create a vmgroup; a default datastore also gets "
             "an allow-create access rule without limits unless it has a rule")
    p.add_argument("--name", required=True)
    p.add_argument("--description", default="")
    p.add_argument("--default-datastore", help="where its volumes go without @datastore")
    p.add_argument("--vm-list", type=_vm_list, default=[], help="VMs to add (comma-separated)")
    p = leaf(grp, "update", vmgroup_update, "rename a vmgroup (only without volumes) or "
             "change its description or default datastore ('' clears it)")
    p.add_argument("--name", required=True)
    p.add_argument("--new-name")
    p.add_argument("--description")
    p.add_argument("--default-datastore")
    p = leaf(grp, "rm", vmgroup_rm, "remove a vmgroup; one that owns volumes needs "
             "--remove-volumes, which deletes them")
    p.add_argument("--name", required=True)
    p.add_argument("--remove-volumes", action="store_true",
                   help="also delete every volume of the vmgroup (none may be attached)")
    leaf(grp, "ls", vmgroup_ls, "list vmgroups with their VMs and volume counts")

    vms = branch(grp, "vm", "the VMs of a vmgroup (a VM is in one vmgroup at most)")
    for name, run, text in (("add", vm_add, "add VMs to a vmgroup"),
                            ("rm", vm_rm, "remove VMs from a vmgroup (back to _DEFAULT)")):
        p = leaf(vms, name, run, text)
        p.add_argument("--name", required=True, help="vmgroup")
        p.add_argument("--vm-list", required=True, type=_vm_list, help="comma-separated VMs")
    leaf(vms, "ls", vm_ls, "list the VMs of a vmgroup").add_argument("--name", required=True)

    acc = branch(grp, "access", "per-datastore access rules: allow-create and quotas; "
                 "_ALL_DS is the rule for every datastore without one of its own")
    p = leaf(acc, "add", access_add, "add an access rule (limits are per datastore)")
    p.add_argument("--allow-create", action="store_true", help="may create volumes there")
    for q in (p, leaf(acc, "set", access_set, "change an access rule")):
        q.add_argument("--name", required=True, help="vmgroup")
        q.add_argument("--datastore", required=True, help="a datastore or _ALL_DS")
        q.add_argument("--volume-maxsize", metavar="SIZE",
                       help="largest volume, X[mb|gb|tb] or unlimited")
        q.add_argument("--volume-totalsize", metavar="SIZE",
                       help="all volumes of the vmgroup there, X[mb|gb|tb] or unlimited")
    acc.choices["set"].add_argument("--allow-create", type=_bool, metavar="true|false")
    p = leaf(acc, "rm", access_rm, "remove an access rule")
    p.add_argument("--name", required=True, help="vmgroup")
    p.add_argument("--datastore", required=True)
    leaf(acc, "ls", access_ls, "list access rules with current use").add_argument(
        "--name", required=True, help="vmgroup")

    pol = branch(top, "policy", "VSAN storage policies (vsphere backend)")
    for name, run, text in (("create", policy_create, "create a VSAN policy"),
                            ("update", policy_update, "change a VSAN policy's rules")):
        p = leaf(pol, name, run, text)
        p.add_argument("--name", required=True)
        p.add_argument("--content", required=True,
                       help='VSAN rules, e.g. (("hostFailuresToTolerate" i1))')
    leaf(pol, "rm", policy_rm, "remove an unused VSAN policy").add_argument(
        "--name", required=True)
    leaf(pol, "ls", policy_ls, "list VSAN policies and the volumes using them")

    cfg = branch(top, "config", "the admin DB")
    p = leaf(cfg, "init", config_init, "create the admin DB (runs locally, not via the "
             "service); an existing DB is left as it is")
    p.add_argument("--db", default=os.environ.get("DOCKVOLS_DB", DEFAULT_DB),
                   help=f"DB file (default: $DOCKVOLS_DB or {DEFAULT_DB}); a path on a shared "
                        "datastore lets every host of a cluster use one DB")
    p.add_argument("--shared", action="store_true",
                   help="the DB is on a shared datastore (rollback journal instead of WAL)")
    leaf(cfg, "status", config_status, "where the service's DB is and what it holds")
    leaf(top, "status", status, "service version, pid, uptime, listeners, backend, log, DB")
    return parser


def _run(args: argparse.Namespace) -> Result:
    client = AdminClient(args.socket, TIMEOUT_S)
    if args.json or not sys.stderr.isatty():  # progress only for a person watching
        return args.run(client, args)
    return run_with_progress(
        lambda: args.run(client, args),
        lambda: client.call("GET", "operations", query={"limit": "1"})["running"],
        sys.stderr)


def _explain(exc: Exception) -> tuple[int, str] | None:
    if isinstance(exc, CliError):
        return 1, f"{exc.code}: {exc.message}"
    if isinstance(exc, Refused):
        code = exc.code if exc.code is not None else f"HTTP{exc.status}"
        message = exc.message if exc.message is not None else repr(exc.reply)
        return 1, f"{code}: {message}"
    if isinstance(exc, NotJson):
        return 1, (f"BadResponse: the service answered {exc.status} with non-JSON: "
                   f"{exc.raw[:200]!r}")
    # An answer that is not HTTP at all (http.client.HTTPException) is a bug in the service:
    # it raises, like any bug; only no answer is the administrator's to fix.
    if isinstance(exc, Unreachable) and isinstance(exc.cause, OSError):
        return 1, (f"ServiceUnreachable: cannot reach the dockvols admin socket "
                   f"{exc.socket_path}: {exc.cause}; is dockvols-esx-service running, and "
                   "may you open its admin socket (root only)?")
    if isinstance(exc, argparse.ArgumentTypeError):  # options that only make sense together
        return 2, str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    return run_main("dockvols-admin", build_parser(), argv, _run, _explain)


if __name__ == "__main__":
    sys.exit(main())
