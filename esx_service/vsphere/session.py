"""One vSphere session: lazy login, re-login on expiry, TLS, round-trip counting.

Every pyVmomi call of the backend goes through ``VsphereSession.invoke`` so that exactly one
place (1) logs in on first use, (2) logs in again when the host answers NotAuthenticated
(session expired or was terminated) and retries that call once, (3) turns transport errors
into the esx_service error family, and (4) counts round trips for the benchmark.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlencode

from pyVmomi import SoapStubAdapter, pbm, vim, vmodl

from ..errors import BackendError, ConfigError
from .faults import describe
from .tasks import TaskEnd, wait_for_task, wait_for_tasks

log = logging.getLogger("dockvols.vsphere.session")
T = TypeVar("T")

# vSphere 6.5 (vcsim's version) is understood by every later ESXi and vCenter and already
# has everything we use: disk profiles, PVSCSI hot-add, FileBackedVirtualDiskSpec.profile.
VIM_VERSION = "vim.version.version11"
PBM_VERSION = "pbm.version.version11"
# Real vCenter serves PBM at /pbm/sdk, vcsim at /pbm: try in that order, remember the winner.
PBM_PATHS = ("/pbm/sdk", "/pbm")
SESSION_COOKIE = "vmware_soap_session"
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)
# Kept-alive SOAP connections: pyVmomi's default of 5 made a sixth concurrent call (attaches
# to many VMs at once) wait for a free one (bench/latency_model.py).
SOAP_POOL = 32


@dataclass
class RoundTrips:
    """Requests sent to the vSphere endpoint: SOAP calls (vim and PBM) and /folder HTTP."""

    soap: int = 0
    http: int = 0
    # told each request's method and seconds (esx_service's API-call latency metric)
    on_call: Callable[[str, float], None] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str) -> None:
        with self._lock:
            setattr(self, kind, getattr(self, kind) + 1)

    def done(self, method: str, started: float) -> None:
        if self.on_call is not None:
            self.on_call(method, time.monotonic() - started)

    @property
    def total(self) -> int:
        return self.soap + self.http

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.soap, self.http


def props_of(obj: vmodl.query.PropertyCollector.ObjectContent) -> dict[str, Any]:
    """A retrieved object's properties as ``{path: value}`` (unset ones absent)."""
    return {p.name: p.val for p in obj.propSet}


def _need(manager: T | None, what: str) -> T:
    if manager is None:
        raise BackendError(f"the vSphere endpoint has no {what}")
    return manager


class CountingStub(SoapStubAdapter):
    """pyVmomi's SOAP stub, counting each request. Property reads through managed-object
    attributes go through InvokeMethod too, so nothing escapes the count."""

    def __init__(self, counter: RoundTrips, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.counter = counter

    def InvokeMethod(self, mo: Any, info: Any, args: Any, outerStub: Any = None) -> Any:
        self.counter.add("soap")
        started = time.monotonic()
        try:
            return super().InvokeMethod(mo, info, args, outerStub)
        finally:
            self.counter.done(str(getattr(info, "wsdlName", None) or info.name), started)


def make_ssl_context(insecure: bool, ca_file: str | None) -> ssl.SSLContext:
    """Verifying by default (system CAs, or ``ca_file``); ``insecure`` is the explicit,
    logged opt-out for test endpoints with self-signed certificates."""
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load vSphere CA file {ca_file!r}: {exc}") from exc


class VsphereSession:
    def __init__(self, host: str, port: int = 443, user: str = "", password: str = "",
                 insecure: bool = False, ca_file: str | None = None,
                 timeout: float = 60.0,
                 on_call: Callable[[str, float], None] | None = None) -> None:
        self.host, self.port, self.user = host, port, user
        self._password = password
        self.timeout = timeout
        self.ssl_context = make_ssl_context(insecure, ca_file)
        if insecure:
            log.warning("TLS certificate verification of vSphere host %s is OFF (insecure)",
                        host)
        self.round_trips = RoundTrips(on_call=on_call)
        self._lock = threading.Lock()
        self._stub: CountingStub | None = None
        self._content: vim.ServiceInstanceContent | None = None
        self._generation = 0        # bumped by every successful login
        self._logged_in = False
        self._pbm: tuple[int, Any] | None = None  # (generation, PBM service content)
        self._pbm_path: str | None = None
        self._http_local = threading.local()  # a kept-alive /folder connection per thread

    @property
    def logins(self) -> int:
        """Successful logins so far: 1 after the first call, +1 per re-login."""
        return self._generation

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}:{self.port}/sdk"

    # -- login ------------------------------------------------------------------------
    def _ensure_login(self) -> int:
        if self._logged_in:
            return self._generation
        with self._lock:
            if not self._logged_in:  # re-check: another thread may have logged in meanwhile
                self._login()
            return self._generation

    def _login(self) -> None:
        """Connect (once) and log in. Caller holds ``self._lock``."""
        try:
            if self._stub is None:
                stub = CountingStub(self.round_trips, host=self.host, port=self.port,
                                    path="/sdk", version=VIM_VERSION,
                                    sslContext=self.ssl_context,
                                    httpConnectionTimeout=self.timeout,
                                    poolSize=SOAP_POOL)
                content = vim.ServiceInstance("ServiceInstance", stub).RetrieveContent()
                self._stub, self._content = stub, content
            assert self._content is not None
            _need(self._content.sessionManager, "SessionManager").Login(
                self.user, self._password, None)
        except vim.fault.InvalidLogin as exc:
            raise ConfigError(f"vSphere at {self.endpoint} refused the login of user "
                              f"{self.user!r}: wrong user name or password") from exc
        except TRANSPORT_ERRORS as exc:
            raise self._transport_error(exc) from exc
        except vmodl.MethodFault as exc:
            raise BackendError(f"login to vSphere at {self.endpoint} failed: "
                               f"{describe(exc)}") from exc
        self._generation += 1
        self._logged_in = True
        log.info("logged in to vSphere %s as %s (%s)", self.endpoint, self.user,
                 self._content.about.fullName)

    def _relogin(self, seen_generation: int) -> None:
        with self._lock:
            if self._generation == seen_generation:  # nobody re-logged in since we failed
                log.info("vSphere session to %s expired; logging in again", self.endpoint)
                self._logged_in = False
                self._login()

    def _transport_error(self, exc: BaseException) -> Exception:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return ConfigError(
                f"TLS verification of vSphere at {self.endpoint} failed: "
                f"{exc.verify_message or exc}; give its CA certificate with the vsphere "
                "ca_file setting, or set insecure=true for a test endpoint")
        return BackendError(f"cannot reach vSphere at {self.endpoint}: {exc}")

    # -- calls ------------------------------------------------------------------------
    @property
    def content(self) -> vim.ServiceInstanceContent:
        self._ensure_login()
        assert self._content is not None
        return self._content

    @property
    def file_manager(self) -> vim.FileManager:
        return _need(self.content.fileManager, "FileManager")

    @property
    def disk_manager(self) -> vim.VirtualDiskManager:
        return _need(self.content.virtualDiskManager, "VirtualDiskManager")

    @property
    def search_index(self) -> vim.SearchIndex:
        return _need(self.content.searchIndex, "SearchIndex")

    @property
    def is_vcenter(self) -> bool:
        return self.content.about.apiType == "VirtualCenter"

    def invoke(self, call: Callable[[], T], idempotent: bool = False) -> T:
        """Run one pyVmomi call; re-login and retry once on NotAuthenticated. An
        ``idempotent`` call (a read) is also retried once after a dropped connection (a
        keep-alive connection the host closed while idle); a call that changes something is
        not, since it may have been carried out. Other vSphere faults propagate as they
        are, for the caller to judge and translate."""
        for attempt in (1, 2):
            generation = self._ensure_login()
            try:
                return call()
            except vim.fault.NotAuthenticated:
                if attempt == 2:
                    raise
                self._relogin(generation)
            except TRANSPORT_ERRORS as exc:
                retry = idempotent and attempt == 1 and not isinstance(exc, ssl.SSLError)
                if not retry:
                    raise self._transport_error(exc) from exc
                log.info("retrying a read on %s after a dropped connection: %s",
                         self.endpoint, exc)
        raise AssertionError("unreachable")

    def retrieve(self, specs: list[vmodl.query.PropertyCollector.FilterSpec]
                 ) -> list[vmodl.query.PropertyCollector.ObjectContent]:
        """RetrievePropertiesEx, following continuation tokens (one round trip per page)."""
        collector = self.content.propertyCollector
        options = vmodl.query.PropertyCollector.RetrieveOptions()
        result = self.invoke(lambda: collector.RetrievePropertiesEx(specs, options),
                             idempotent=True)
        objects = list(result.objects) if result else []
        while result is not None and result.token:
            token = result.token
            result = self._continue(collector, token)
            objects.extend(result.objects if result else [])
        return objects

    def _continue(self, collector: vmodl.query.PropertyCollector, token: str
                  ) -> vmodl.query.PropertyCollector.RetrieveResult:
        return self.invoke(lambda: collector.ContinueRetrievePropertiesEx(token),
                           idempotent=True)

    def retrieve_one(self, obj: Any, paths: list[str]) -> dict[str, Any]:
        """Properties ``paths`` of one managed object, as a dict (absent ones missing)."""
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=obj, skip=False)],
                             propSet=[pc.PropertySpec(type=type(obj), pathSet=paths)])
        found = self.retrieve([spec])
        return props_of(found[0]) if found else {}

    def retrieve_each(self, wanted: list[tuple[Any, list[str]]]) -> list[dict[str, Any]]:
        """Properties of several managed objects (each with its own paths) in one round
        trip, as dicts in the order asked (an object the server did not return: {})."""
        pc = vmodl.query.PropertyCollector
        paths_of: dict[type, list[str]] = {}  # one PropertySpec per type
        for obj, paths in wanted:
            known = paths_of.setdefault(type(obj), [])
            known.extend(p for p in paths if p not in known)
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=obj, skip=False) for obj, _ in wanted],
            propSet=[pc.PropertySpec(type=kind, pathSet=paths)
                     for kind, paths in paths_of.items()])
        by_id = {(type(o.obj).__name__, o.obj._moId): props_of(o)
                 for o in self.retrieve([spec])}
        return [by_id.get((type(obj).__name__, obj._moId), {}) for obj, _ in wanted]

    def wait(self, task: vim.Task, what: str) -> Any:
        return wait_for_task(self, task, what)

    def wait_all(self, tasks: list[vim.Task], what: str,
                 also: list[tuple[Any, list[str]]] | None = None
                 ) -> tuple[list[TaskEnd], list[dict[str, Any]]]:
        """Every task's end (and ``also``'s properties), one round trip per look."""
        return wait_for_tasks(self, tasks, what, also)

    def http(self, method: str, path: str, query: dict[str, str],
             body: bytes | None = None) -> tuple[int, bytes]:
        """A request on the endpoint's HTTP interface (``/folder``) with the session cookie;
        logs in again once if the host answers 401."""
        url = f"{path}?{urlencode(query)}"
        for attempt in (1, 2):
            generation = self._ensure_login()
            headers = {"Cookie": f"{SESSION_COOKIE}={self.session_id}"}
            if body is not None:
                headers["Content-Type"] = "application/octet-stream"
            status, data = self._http_exchange(method, url, body, headers)
            if status == 401 and attempt == 1:
                self._relogin(generation)
                continue
            return status, data
        raise AssertionError("unreachable")

    def _http_exchange(self, method: str, url: str, body: bytes | None,
                       headers: dict[str, str]) -> tuple[int, bytes]:
        """One request on this thread's kept-alive HTTPS connection: a new one per request
        cost a TCP and a TLS handshake, two or three network round trips more than the
        request itself (issue 15). A kept connection the host closed while idle fails
        before any answer; then the request goes once more on a new connection, which is
        safe because GET, PUT of a whole file and DELETE are idempotent."""
        conn: http.client.HTTPSConnection | None = getattr(self._http_local, "conn", None)
        reused = conn is not None
        while True:
            if conn is None:
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                   context=self.ssl_context)
            self._http_local.conn = conn
            self.round_trips.add("http")
            started = time.monotonic()
            try:
                conn.request(method, url, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except TRANSPORT_ERRORS as exc:
                conn.close()
                self._http_local.conn = conn = None
                stale = reused and isinstance(exc, (ConnectionError,
                                                    http.client.RemoteDisconnected,
                                                    http.client.CannotSendRequest,
                                                    http.client.BadStatusLine,
                                                    ssl.SSLEOFError, ssl.SSLZeroReturnError))
                if not stale:
                    raise self._transport_error(exc) from exc
                reused = False
                continue
            finally:
                self.round_trips.done(f"folder:{method}", started)
            if resp.will_close:
                conn.close()
                self._http_local.conn = None
            return resp.status, data

    @property
    def session_id(self) -> str:
        cookie = SimpleCookie(self._stub.cookie if self._stub else "")
        return cookie[SESSION_COOKIE].value if SESSION_COOKIE in cookie else ""

    # -- PBM (storage policies; vCenter only) -----------------------------------------
    def pbm_content(self) -> Any:
        generation = self._ensure_login()
        if self._pbm is not None and self._pbm[0] == generation:
            return self._pbm[1]
        if not self.is_vcenter:
            raise BackendError(f"storage policies need vCenter; {self.endpoint} is a "
                               "standalone ESX host without the policy (PBM) service")
        last: BaseException | None = None
        for path in [self._pbm_path] if self._pbm_path else list(PBM_PATHS):
            stub = CountingStub(self.round_trips, host=self.host, port=self.port, path=path,
                                version=PBM_VERSION, sslContext=self.ssl_context,
                                httpConnectionTimeout=self.timeout,
                                requestContext={"vcSessionCookie": self.session_id})
            # vCenter takes the session from the header above, vcsim from the cookie.
            stub.cookie = self._stub.cookie if self._stub else ""
            try:
                content = pbm.ServiceInstance("ServiceInstance", stub).RetrieveContent()
            except http.client.HTTPException as exc:  # 404: not at this path
                last = exc
                continue
            except TRANSPORT_ERRORS as exc:
                raise self._transport_error(exc) from exc
            self._pbm_path = path
            self._pbm = (generation, content)
            return content
        raise BackendError(f"no storage policy (PBM) service at {self.endpoint} "
                           f"(tried {', '.join(PBM_PATHS)}): {last}")

    # -- logout -----------------------------------------------------------------------
    def logout(self) -> None:
        with self._lock:
            if not self._logged_in or self._content is None:
                return
            self._logged_in = False
            self._pbm = None
            try:
                _need(self._content.sessionManager, "SessionManager").Logout()
            except (vmodl.MethodFault, *TRANSPORT_ERRORS) as exc:
                # Logging out is courtesy: the server expires the session anyway.
                log.debug("vSphere logout from %s failed: %s", self.endpoint, exc)

    def __enter__(self) -> VsphereSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.logout()
