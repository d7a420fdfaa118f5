"""vSphere API calls and volume operations measured against vcsim."""

from __future__ import annotations

from esx_service.backends.vsphere import VsphereBackend
from esx_service.metrics import Registry
from esx_service.telemetry import Telemetry
from esx_service.volumes import VolumeService

from .conftest import Vcsim


def test_each_vsphere_request_is_timed_by_method_and_each_operation_by_backend(
        vcsim: Vcsim, name: str) -> None:
    telemetry = Telemetry("vsphere", Registry())
    with VsphereBackend(vcsim.session(on_call=telemetry.api_call)) as backend:
        service = VolumeService(backend, observer=telemetry)
        service.create("vm1", name, {"size": "10mb"})
        service.remove("vm1", name)
    calls = telemetry.api_calls
    for method in ("RetrieveServiceContent", "Login", "RetrievePropertiesEx",
                   "CreateVirtualDisk_Task", "DeleteVirtualDisk_Task"):
        assert calls.count(method=method) >= 1, method
    assert calls.count(method="folder:PUT") >= 1  # the metadata file, over /folder
    for op in ("create", "remove"):
        assert telemetry.ops.count(op=op, backend="vsphere", outcome="ok", fault="") == 1
