from __future__ import annotations

import json

from dockvols_common import wire as wire_codes
from esx_service import errors
from esx_service.access import DEFAULT_VMGROUP, OpenAccess
from esx_service.errors import ALL_ERRORS, DockvolsError, VolumeInUse


def test_every_error_class_is_registered_under_its_own_unique_code():
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, DockvolsError)]
    assert sorted(ALL_ERRORS) == sorted(c.code for c in classes)
    assert all(ALL_ERRORS[c.code] is c for c in classes)


def test_the_host_answers_with_exactly_the_shared_wire_codes():
    assert set(ALL_ERRORS) == set(wire_codes.CODES)


def test_wire_form_carries_code_and_message():
    wire = VolumeInUse("volume db@ds1 is attached to VM web-2").to_wire()
    assert json.loads(json.dumps(wire)) == {
        "error": {"code": "VolumeInUse", "message": "volume db@ds1 is attached to VM web-2"}}


def test_open_access_puts_everyone_in_the_default_vmgroup_and_allows_all():
    access = OpenAccess()
    assert access.vmgroup_of("any-vm") == DEFAULT_VMGROUP == "_DEFAULT"
    assert access.default_datastore(DEFAULT_VMGROUP) is None
    assert access.check_create(DEFAULT_VMGROUP, "ds1", 10**9,
                               lambda: (_ for _ in ()).throw(AssertionError("costly"))) is None
