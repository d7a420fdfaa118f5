"""Property-based fuzzing of every VolumeDriver endpoint: whatever dockerd (or anyone on the
socket) sends, the answer is JSON with a clear ``Err`` or a well-formed result, never a
crash page or a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin.app import create_app

ENDPOINTS = ["/Plugin.Activate", "/VolumeDriver.Create", "/VolumeDriver.Remove",
             "/VolumeDriver.Mount", "/VolumeDriver.Unmount", "/VolumeDriver.Path",
             "/VolumeDriver.Get", "/VolumeDriver.List", "/VolumeDriver.Capabilities"]
EXAMPLES = 400

# hypothesis's text never holds a lone surrogate; JSON can ("\ud800"), so add them
# (one at a time: a high one before a low one is a pair, which JSON decodes to a character)
surrogates = st.builds(lambda a, c, b: a + c + b, st.text(max_size=3),
                       st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                       st.text(max_size=3))
names = st.one_of(st.text(max_size=120), surrogates, st.sampled_from(
    ["../x", "x\x00y", "a@b@c", "db", "db@ds1", "é", "x" * 10_000, "", "\ud800",
     "db\udfff@ds1", "\ud83d"]))
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3), max_leaves=8)
bodies = st.one_of(
    st.binary(max_size=300),
    st.fixed_dictionaries({}, optional={"Name": st.one_of(names, values),
                                        "ID": st.one_of(st.text(max_size=70), values,
                                                        surrogates),
                                        "Opts": st.one_of(values, st.dictionaries(
                                            st.sampled_from(["size", "fstype", "bogus",
                                                             "\udc80"]),
                                            st.one_of(st.text(max_size=10), surrogates,
                                                      st.sampled_from(["9" * 5000 + "gb",
                                                                       "1" * 30 + "mb"]))))}).map(
        lambda d: json.dumps(d).encode()),
    st.just(b"[" * 3000),
    st.just(b"x" * 300_000),
)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies,
       content_type=st.sampled_from([None, "application/json", "text/plain"]))
def test_every_endpoint_answers_any_body_with_json(
        tmp_path: Path, endpoint: str, body: bytes, content_type: str | None) -> None:
    from tests.unit.conftest import PluginRig

    rig = PluginRig(tmp_path)
    client = create_app(rig.manager).test_client()
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(endpoint, data=body, headers=headers)
    data = response.get_json(force=True, silent=True)
    assert isinstance(data, dict), response.data[:200]
    if response.status_code != 200 or data.get("Err"):
        assert data.get("Err"), data
        assert "Traceback" not in data["Err"]
        assert "internal error" not in data["Err"], data["Err"]


@given(endpoint=st.sampled_from(ENDPOINTS), name=surrogates | st.sampled_from(
    ["\ud800", "a\udfffb", "db@\ud800"]))
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_a_lone_surrogate_name_is_refused_on_every_endpoint(
        tmp_path: Path, endpoint: str, name: str) -> None:
    from tests.unit.conftest import PluginRig

    rig = PluginRig(tmp_path)
    client = create_app(rig.manager).test_client()
    response = client.post(endpoint, data=json.dumps({"Name": name, "ID": "m1"}).encode())
    data = response.get_json(force=True)
    if endpoint in ("/Plugin.Activate", "/VolumeDriver.Capabilities", "/VolumeDriver.List"):
        return  # they take no name
    assert "lone surrogate" in data["Err"], data
