"""vDVS VSAN rule strings parse into typed (capability, value) pairs, and the PBM specs built
from them carry those rules under the VSAN namespace; all without a server."""

from __future__ import annotations

import pytest
from pyVmomi import VmomiSupport, pbm
from pyVmomi.SoapAdapter import Serialize

from esx_service.errors import InvalidOption
from esx_service.vsphere import vsan_rules


# -- parse_rules ---------------------------------------------------------------------------
def test_vdvs_rules_parse_in_order_with_their_types() -> None:
    rules = vsan_rules.parse_rules(
        ' (("hostFailuresToTolerate" i1) ("forceProvisioning" i0)\n'
        '  ("objectSize" l8589934592) ("checksumDisabled" btrue) ("sparse" b0)'
        '  ("replicaPreference" "RAID-1 (Mirroring) - Performance")) ')
    assert rules == [("hostFailuresToTolerate", 1), ("forceProvisioning", 0),
                     ("objectSize", 8589934592), ("checksumDisabled", True), ("sparse", False),
                     ("replicaPreference", "RAID-1 (Mirroring) - Performance")]
    kinds = [type(value) for _, value in rules]
    assert kinds == [int, int, VmomiSupport.long, bool, bool, str]


@pytest.mark.parametrize("value,expected,kind", [
    ("i-1", -1, int), ("i+7", 7, int), ("i2147483647", 2**31 - 1, int),
    ("l-9223372036854775808", -2**63, VmomiSupport.long), ("bFALSE", False, bool),
    ("b1", True, bool), ('""', "", str),
])
def test_values_at_their_limits_are_accepted(value: str, expected: object, kind: type) -> None:
    [(capability, parsed)] = vsan_rules.parse_rules(f'(("cap" {value}))')
    assert (capability, parsed, type(parsed)) == ("cap", expected, kind)


@pytest.mark.parametrize("content,bad", [
    ("hostFailuresToTolerate=1", "'hostFailuresToTolerate=1'"),
    ('("hostFailuresToTolerate" i1)', """'"hostFailuresToTolerate"'"""),  # a rule, no list
    ('(("hostFailuresToTolerate" x1))', "'x1'"),
    ('(("hostFailuresToTolerate" I1))', "'I1'"),
    ('(("hostFailuresToTolerate" i1.5))', "'i1.5'"),
    ('(("forceProvisioning" byes))', "'byes'"),
    ('(("hostFailuresToTolerate" i1) garbage)', "'garbage'"),
    ('(("proportionalCapacity" (i0 i100)))', """'("proportionalCapacity" (i0 i100))'"""),
    ('(("stripeWidth" i1 i2))', """'("stripeWidth" i1 i2)'"""),
    ('((hostFailuresToTolerate i1))', "'(hostFailuresToTolerate i1)'"),
    ('(("" i1))', """'("" i1)'"""),
    ('(("hostFailuresToTolerate" i2147483648))', "'i2147483648'"),
    ('(("objectSize" l9223372036854775808))', "'l9223372036854775808'"),
    ('(("a" i1) ("A" i2))', "'A'"),
    ("()", "'()'"),
    ("", "''"),
])
def test_anything_else_is_refused_naming_the_bad_part(content: str, bad: str) -> None:
    with pytest.raises(InvalidOption) as raised:
        vsan_rules.parse_rules(content)
    assert bad in raised.value.message


def test_an_int_too_big_is_told_to_use_a_long() -> None:
    with pytest.raises(InvalidOption, match="use l for a 64-bit value"):
        vsan_rules.parse_rules('(("objectSize" i8589934592))')


# -- specs ---------------------------------------------------------------------------------
def _rules_of(constraints: pbm.profile.CapabilityConstraints) -> list[tuple[str, str, object]]:
    assert isinstance(constraints, pbm.profile.SubProfileCapabilityConstraints)
    [sub] = constraints.subProfiles
    assert sub.name
    found = []
    for cap in sub.capability:
        [constraint] = cap.constraint
        [prop] = constraint.propertyInstance
        assert prop.id == cap.id.id
        found.append((cap.id.namespace, cap.id.id, prop.value))
    return found


def test_the_create_spec_is_a_vsan_storage_requirement_with_one_rule_set() -> None:
    rules = vsan_rules.parse_rules('(("hostFailuresToTolerate" i1) ("objectSize" l5))')
    spec = vsan_rules.create_spec("gold", rules)
    assert isinstance(spec, pbm.profile.CapabilityBasedProfileCreateSpec)
    assert (spec.name, spec.category, spec.resourceType.resourceType) == (
        "gold", "REQUIREMENT", "STORAGE")
    assert _rules_of(spec.constraints) == [("VSAN", "hostFailuresToTolerate", 1),
                                           ("VSAN", "objectSize", 5)]
    wire = Serialize(spec).decode()  # what goes to PBM: the value types survive
    assert '<value xsi:type="xsd:int">1</value>' in wire
    assert '<value xsi:type="xsd:long">5</value>' in wire


def test_the_update_spec_replaces_the_rules_only() -> None:
    spec = vsan_rules.update_spec(vsan_rules.parse_rules('(("forceProvisioning" btrue))'))
    assert isinstance(spec, pbm.profile.CapabilityBasedProfileUpdateSpec)
    assert spec.name is None and spec.description is None
    assert _rules_of(spec.constraints) == [("VSAN", "forceProvisioning", True)]
    assert '<value xsi:type="xsd:boolean">true</value>' in Serialize(spec).decode()


def test_find_prefers_the_exact_name_then_any_case() -> None:
    known = {"Gold": "id1", "gold": "id2", "Silver": "id3"}
    assert vsan_rules.find(known, "gold") == ("gold", "id2")
    assert vsan_rules.find(known, "SILVER") == ("Silver", "id3")
    assert vsan_rules.find(known, "bronze") is None
