"""VSAN storage policy rules: vDVS rule strings -> PBM profile specs, without any server.

An admin writes rules as vDVS did::

    (("hostFailuresToTolerate" i1) ("forceProvisioning" i0) ("replicaPreference" "RAID-1"))

Each rule is ``("capability" VALUE)``; VALUE is ``i<int>`` (32-bit), ``l<long>`` (64-bit),
``b<0|1|true|false>`` or a ``"quoted string"``. Anything else (ranges such as
``(i0 i100)`` included) is refused naming the offending part, before any server is asked.
The backend runs the specs built here (PbmCreate/PbmUpdate); this module does no I/O.
"""

from __future__ import annotations

import re

from pyVmomi import VmomiSupport, pbm

from ..errors import InvalidOption

NAMESPACE = "VSAN"
SUB_PROFILE = "Rule-Set 1"  # what the vSphere client names a policy's first rule set
DESCRIPTION = "created by dockvols-admin"
EXAMPLE = '(("hostFailuresToTolerate" i1) ("forceProvisioning" i0))'
VALUES = 'i<int>, l<long>, b<0|1|true|false> or a "quoted string"'

RuleValue = int | bool | str  # a long is VmomiSupport.long, an int that pyVmomi sends as such
Rule = tuple[str, RuleValue]

_RULE = re.compile(r'\(\s*"(?P<id>[A-Za-z][\w.]*)"\s+(?P<value>"[^"]*"|[^\s()"]+)\s*\)')
# the type letter is lower case, as vDVS wrote it; true/false may be in any case
_VALUE = re.compile(r'(?P<kind>[il])(?P<num>[+-]?\d+)|b(?P<bool>0|1|(?i:true|false))'
                    r'|"(?P<str>[^"]*)"')
_LIMITS = {"i": 2**31, "l": 2**63}


def parse_rules(content: str) -> list[Rule]:
    """``[(capability id, typed value), ...]`` in the order given, or InvalidOption naming
    the first part that is not a rule."""
    text = content.strip()
    if len(text) < 2 or text[0] != "(" or text[-1] != ")":
        raise InvalidOption(f"invalid policy rules {content!r}: give rules in parentheses, "
                            f"e.g. {EXAMPLE}")
    body, pos, rules = text[1:-1], 0, []
    seen: set[str] = set()
    while True:
        while pos < len(body) and body[pos].isspace():
            pos += 1
        if pos == len(body):
            break
        match = _RULE.match(body, pos)
        if match is None:
            raise InvalidOption(f"invalid policy rule {_chunk(body, pos)!r} in {text!r}: a rule "
                                f'is ("capability" VALUE) with VALUE {VALUES}')
        capability = match["id"]
        if capability.lower() in seen:
            raise InvalidOption(f"capability {capability!r} is given twice in {text!r}")
        seen.add(capability.lower())
        rules.append((capability, _value(match["value"], match.group())))
        pos = match.end()
    if not rules:
        raise InvalidOption(f"policy rules {content!r} hold no rule; e.g. {EXAMPLE}")
    return rules


def _value(raw: str, rule: str) -> RuleValue:
    found = _VALUE.fullmatch(raw)
    if found is None:
        raise InvalidOption(f"invalid value {raw!r} in policy rule {rule!r}: use {VALUES}")
    if found["str"] is not None:
        return found["str"]
    if found["bool"] is not None:
        return found["bool"].lower() in ("1", "true")
    kind, number = found["kind"], int(found["num"])
    if not -_LIMITS[kind] <= number < _LIMITS[kind]:
        bits = "32" if kind == "i" else "64"
        hint = "; use l for a 64-bit value" if kind == "i" else ""
        raise InvalidOption(f"value {raw!r} in policy rule {rule!r} does not fit {bits} "
                            f"bits{hint}")
    return VmomiSupport.long(number) if kind == "l" else number


def _chunk(text: str, pos: int) -> str:
    """The part of ``text`` at ``pos`` to name in an error: one balanced ``(...)`` group,
    else one word."""
    if text[pos] != "(":
        word = re.compile(r"[^\s()]+|.").match(text, pos)
        return word.group() if word else text[pos:]
    depth = 0
    for end in range(pos, len(text)):
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        if depth == 0:
            return text[pos:end + 1]
    return text[pos:]


def constraints(rules: list[Rule]) -> pbm.profile.SubProfileCapabilityConstraints:
    """One sub-profile (rule set) holding one VSAN capability per rule."""
    capabilities = [pbm.capability.CapabilityInstance(
        id=pbm.capability.CapabilityMetadata.UniqueId(namespace=NAMESPACE, id=capability),
        constraint=[pbm.capability.ConstraintInstance(propertyInstance=[
            pbm.capability.PropertyInstance(id=capability, value=value)])])
        for capability, value in rules]
    sub = pbm.profile.SubProfileCapabilityConstraints.SubProfile(name=SUB_PROFILE,
                                                                 capability=capabilities)
    return pbm.profile.SubProfileCapabilityConstraints(subProfiles=[sub])


def create_spec(name: str, rules: list[Rule]) -> pbm.profile.CapabilityBasedProfileCreateSpec:
    # REQUIREMENT: the category the backend lists (and disks can be given)
    return pbm.profile.CapabilityBasedProfileCreateSpec(
        name=name, description=DESCRIPTION, category="REQUIREMENT",
        resourceType=pbm.profile.ResourceType(resourceType="STORAGE"),
        constraints=constraints(rules))


def update_spec(rules: list[Rule]) -> pbm.profile.CapabilityBasedProfileUpdateSpec:
    """Replaces the rules; leaves the name and description as they are."""
    return pbm.profile.CapabilityBasedProfileUpdateSpec(constraints=constraints(rules))


def find(known: dict[str, str], name: str) -> tuple[str, str] | None:
    """``(name as the server spells it, profile id)`` of ``name`` among ``known`` (name ->
    id): the exact name first, else the one differing only in case."""
    if name in known:
        return name, known[name]
    return next(((n, pid) for n, pid in known.items() if n.lower() == name.lower()), None)
