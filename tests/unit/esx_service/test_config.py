from __future__ import annotations

import pytest

from esx_service.config import ServiceConfig, VsphereSettings, load_config
from esx_service.errors import ConfigError

INI = """\
[service]
backend = local
data_dir = /srv/dockvols
socket = /run/dv/esx.sock
vm_name = file-vm
default_datastore = fast
log_level = warning
extra_vm_sockets = /run/dv/vm2.sock=vm2, /run/dv/vm3.sock=vm3

[local]
datastores = fast=/srv/fast, slow=/srv/slow

[vsphere]
host = vc.example
port = 8443
user = admin
password = s3cret%
insecure = yes
datacenter = dc1
datastores = vsanDatastore, nfs1
"""


def _write(tmp_path, text=INI):
    path = tmp_path / "dockvols.conf"
    path.write_text(text)
    return str(path)


def test_without_a_file_or_environment_the_defaults_apply(tmp_path, monkeypatch):
    monkeypatch.setattr("esx_service.config.DEFAULT_CONFIG_FILE", str(tmp_path / "absent"))
    config = load_config(env={})
    assert config.backend == "local"
    assert config.data_dir == "/var/lib/dockvols"
    assert config.socket == "/run/dockvols/esx.sock"
    assert config.log_level == "INFO"
    assert config.source == "defaults"
    assert config.vsphere == VsphereSettings()
    assert config.local_datastores == {
        "datastore1": "/var/lib/dockvols/datastores/datastore1"}


def test_every_file_setting_is_read(tmp_path):
    config = load_config(_write(tmp_path), env={})
    assert config.data_dir == "/srv/dockvols"
    assert config.socket == "/run/dv/esx.sock"
    assert config.vm_name == "file-vm"
    assert config.default_datastore == "fast"
    assert config.log_level == "WARNING"
    assert config.extra_vm_sockets == (("/run/dv/vm2.sock", "vm2"), ("/run/dv/vm3.sock", "vm3"))
    assert config.local_datastores == {"fast": "/srv/fast", "slow": "/srv/slow"}
    assert config.vsphere == VsphereSettings(
        host="vc.example", port=8443, user="admin", password="s3cret%", insecure=True,
        datacenter="dc1", datastores=("vsanDatastore", "nfs1"))
    assert config.source == str(tmp_path / "dockvols.conf")


def test_the_environment_wins_over_the_file(tmp_path):
    config = load_config(_write(tmp_path), env={
        "DOCKVOLS_VM_NAME": "env-vm", "DOCKVOLS_LOG_LEVEL": "debug",
        "DOCKVOLS_DATASTORES": "only=/x", "DOCKVOLS_VSPHERE_PORT": "443",
        "DOCKVOLS_VSPHERE_INSECURE": "false"})
    assert config.vm_name == "env-vm"
    assert config.log_level == "DEBUG"
    assert config.local_datastores == {"only": "/x"}
    assert config.vsphere.port == 443 and config.vsphere.insecure is False
    assert config.data_dir == "/srv/dockvols"  # not in the environment: the file's
    assert config.source.endswith("dockvols.conf + environment")


def test_dockvols_config_names_the_file(tmp_path):
    path = _write(tmp_path)
    assert load_config(env={"DOCKVOLS_CONFIG": path}).vm_name == "file-vm"


def test_an_explicit_missing_file_is_an_error(tmp_path):
    missing = str(tmp_path / "nope.conf")
    with pytest.raises(ConfigError, match="nope.conf does not exist"):
        load_config(missing, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(env={"DOCKVOLS_CONFIG": missing})


def test_an_unparsable_file_is_an_error_naming_it(tmp_path):
    path = _write(tmp_path, "no section header here\n")
    with pytest.raises(ConfigError, match="cannot parse config file .*dockvols.conf"):
        load_config(path, env={})


@pytest.mark.parametrize("env,pattern", [
    ({"DOCKVOLS_BACKEND": "cloud"}, r"invalid backend 'cloud': allowed are local, vsphere"),
    ({"DOCKVOLS_LOG_LEVEL": "loud"},
     r"invalid log_level 'LOUD': allowed are DEBUG, INFO, WARNING, ERROR"),
    ({"DOCKVOLS_DATASTORES": "ds1"}, r"invalid datastores entry 'ds1': expected NAME=VALUE"),
    ({"DOCKVOLS_DATASTORES": "ds1=/a,=/b"}, r"invalid datastores entry '=/b'"),
    ({"DOCKVOLS_DATASTORES": "ds1="}, r"invalid datastores entry 'ds1='"),
    ({"DOCKVOLS_EXTRA_VM_SOCKETS": "/run/x.sock"}, r"invalid extra_vm_sockets entry"),
    ({"DOCKVOLS_VSPHERE_PORT": "https"}, r"invalid vsphere port 'https': expected a number"),
    ({"DOCKVOLS_VSPHERE_INSECURE": "maybe"}, r"invalid vsphere insecure 'maybe': use true"),
])
def test_each_invalid_value_is_an_error_naming_it(tmp_path, env, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(str(_write(tmp_path, "[service]\n")), env=env)


@pytest.mark.parametrize("text,expected", [
    ("1", True), ("TRUE", True), ("on", True), ("yes", True),
    ("0", False), ("False", False), ("off", False), ("no", False)])
def test_booleans(tmp_path, text, expected):
    config = load_config(_write(tmp_path, "[service]\n"),
                         env={"DOCKVOLS_VSPHERE_INSECURE": text})
    assert config.vsphere.insecure is expected


def test_the_config_object_is_frozen(tmp_path):
    config = load_config(_write(tmp_path), env={})
    with pytest.raises(AttributeError):
        config.backend = "vsphere"  # type: ignore[misc]
    assert isinstance(config, ServiceConfig)


def test_local_datastore_names_may_hold_spaces_and_mixed_case(tmp_path):
    config = load_config(str(_write(tmp_path, "")),
                         env={"DOCKVOLS_DATASTORES": "My Data Store=/a, SSD (2)=/b"})
    assert config.local_datastores == {"My Data Store": "/a", "SSD (2)": "/b"}


def test_a_local_datastore_name_with_an_at_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="invalid local datastore name 'a@b'.*'@'"):
        load_config(str(_write(tmp_path, "")), env={"DOCKVOLS_DATASTORES": "a@b=/a"})


def test_lease_settings_are_read_and_checked(tmp_path, monkeypatch):
    monkeypatch.setattr("esx_service.config.DEFAULT_CONFIG_FILE", str(tmp_path / "absent"))
    default = load_config(env={})
    assert (default.leases, default.lease_seconds, default.lease_wait_seconds,
            default.lease_keep_seconds) == ("datastore", 15.0, 90.0, None)
    config = load_config(env={"DOCKVOLS_LEASES": "Process", "DOCKVOLS_LEASE_SECONDS": "4",
                              "DOCKVOLS_LEASE_WAIT_SECONDS": "30", "DOCKVOLS_HOST_ID": "esx-7",
                              "DOCKVOLS_LEASE_KEEP_SECONDS": "0"})
    assert (config.leases, config.lease_seconds, config.lease_wait_seconds, config.host_id,
            config.lease_keep_seconds) == ("process", 4.0, 30.0, "esx-7", 0.0)
    with pytest.raises(ConfigError, match="lease_keep_seconds '61': expected seconds from 0"):
        load_config(env={"DOCKVOLS_LEASE_KEEP_SECONDS": "61"})
    with pytest.raises(ConfigError, match="invalid leases 'etcd': allowed are datastore, "):
        load_config(env={"DOCKVOLS_LEASES": "etcd"})
    for bad in ("0.5", "nan", "ten"):
        with pytest.raises(ConfigError, match="lease_seconds .* expected seconds from 1 to"):
            load_config(env={"DOCKVOLS_LEASE_SECONDS": bad})
