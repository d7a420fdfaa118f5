from __future__ import annotations

import json
import re

import pytest

from esx_service.metadata import ATTACHED, CREATING, DETACHED, REMOVING, VolumeMeta
from esx_service.options import VolumeOptions


def _meta(**kw) -> VolumeMeta:
    base = dict(name="db", datastore="ds1", vmgroup="_DEFAULT",
                options=VolumeOptions(size_mb=200, fstype="xfs"), created_by="vm1")
    base.update(kw)
    return VolumeMeta(**base)


def test_metadata_round_trips_through_json():
    meta = _meta(status=ATTACHED, attached_to="vm2",
                 attach_info={"kind": "loop", "device": "/dev/loop3"},
                 disk_uuid="60 00", docker_name="db")
    back = VolumeMeta.from_dict(json.loads(json.dumps(meta.to_dict())))
    assert back == meta
    assert isinstance(back.options, VolumeOptions)


def test_new_metadata_starts_creating_with_a_utc_timestamp():
    meta = _meta()
    assert meta.status == CREATING
    assert meta.generation == 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta.created_at)


def test_evolve_changes_fields_and_bumps_the_generation():
    meta = _meta()
    later = meta.evolve(status=DETACHED)
    assert later.status == DETACHED and later.generation == 1
    assert meta.status == CREATING  # frozen: the original is untouched
    assert later.evolve(status=ATTACHED, attached_to="vm1").generation == 2


@pytest.mark.parametrize("status,visible", [
    (CREATING, False), (DETACHED, True), (ATTACHED, True), (REMOVING, False)])
def test_only_detached_and_attached_volumes_are_visible(status, visible):
    assert _meta(status=status).visible is visible


def test_full_name_is_name_at_datastore():
    assert _meta().full_name == "db@ds1"


def test_unknown_status_is_refused():
    data = _meta().to_dict()
    data["status"] = "exploded"
    with pytest.raises(ValueError, match="exploded"):
        VolumeMeta.from_dict(data)


def test_missing_required_fields_are_refused():
    with pytest.raises(TypeError):
        VolumeMeta.from_dict({"status": DETACHED})


def test_unknown_keys_from_a_newer_version_are_ignored():
    data = _meta(status=DETACHED).to_dict()
    data["added_in_v2"] = True
    data["options"]["future_option"] = 1
    assert VolumeMeta.from_dict(data).status == DETACHED
