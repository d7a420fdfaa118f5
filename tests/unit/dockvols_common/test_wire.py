from __future__ import annotations

from dockvols_common import wire


def test_an_error_body_reads_back_its_code_and_message() -> None:
    body = wire.error_body(wire.VOLUME_IN_USE, "volume db@ds1 is attached to VM web-2")
    assert wire.error_of(body) == {"code": "VolumeInUse",
                                   "message": "volume db@ds1 is attached to VM web-2"}


def test_a_body_without_an_error_reads_as_none_so_the_reader_uses_the_status() -> None:
    assert wire.error_of({"Err": "a proxy's page"}) == {}
    assert wire.error_of({"error": None}) == {}
