from __future__ import annotations

import pytest

from plugin.settings import PluginSettings, SettingsError, load_settings


def test_defaults():
    assert load_settings({}) == PluginSettings()
    assert PluginSettings().socket_path == "/run/docker/plugins/vsphere.sock"


def test_every_setting_comes_from_the_environment():
    settings = load_settings({
        "DOCKVOLS_DRIVER_NAME": "vmdk", "DOCKVOLS_ESX_ADDRESS": "http://10.0.0.1:8080",
        "DOCKVOLS_MOUNT_ROOT": "/mnt/x", "DOCKVOLS_STATE_DIR": "/var/x",
        "DOCKER_HOST": "tcp://docker:2375", "DOCKVOLS_LOG_LEVEL": "debug",
        "DOCKVOLS_ESX_TIMEOUT": "250", "DOCKVOLS_QUERY_TIMEOUT": "2.5",
        "DOCKVOLS_DEVICE_TIMEOUT": "60", "DOCKVOLS_RECOVER": "0"})
    assert settings == PluginSettings(
        driver_name="vmdk", socket_path="/run/docker/plugins/vmdk.sock",
        esx_address="http://10.0.0.1:8080", mount_root="/mnt/x", state_dir="/var/x",
        docker_host="tcp://docker:2375", log_level="DEBUG", esx_timeout=250.0,
        query_timeout=2.5, device_timeout=60.0, recover_on_start=False)


def test_the_plugin_socket_may_be_set_on_its_own():
    assert load_settings({"DOCKVOLS_PLUGIN_SOCKET": "/tmp/p.sock"}).socket_path == "/tmp/p.sock"


@pytest.mark.parametrize("value,expected", [("1", True), ("yes", True), ("0", False),
                                            ("false", False), ("no", False)])
def test_recovery_switch(value, expected):
    assert load_settings({"DOCKVOLS_RECOVER": value}).recover_on_start is expected


@pytest.mark.parametrize("env,pattern", [
    ({"DOCKVOLS_DRIVER_NAME": "a/b"}, "invalid DOCKVOLS_DRIVER_NAME 'a/b'"),
    ({"DOCKVOLS_DRIVER_NAME": ""}, "invalid DOCKVOLS_DRIVER_NAME ''"),
    ({"DOCKVOLS_LOG_LEVEL": "chatty"}, "invalid DOCKVOLS_LOG_LEVEL 'CHATTY'"),
    ({"DOCKVOLS_ESX_ADDRESS": "/run/esx.sock"}, "invalid DOCKVOLS_ESX_ADDRESS '/run/esx.sock'"),
    ({"DOCKVOLS_ESX_TIMEOUT": "soon"}, "invalid DOCKVOLS_ESX_TIMEOUT 'soon': expected seconds"),
    ({"DOCKVOLS_QUERY_TIMEOUT": "0"}, "invalid DOCKVOLS_QUERY_TIMEOUT '0': must be positive"),
    ({"DOCKVOLS_DEVICE_TIMEOUT": "-5"}, "invalid DOCKVOLS_DEVICE_TIMEOUT '-5'"),
])
def test_each_invalid_setting_is_an_error_naming_it(env, pattern):
    with pytest.raises(SettingsError, match=pattern):
        load_settings(env)


def test_an_empty_timeout_means_the_default():
    assert load_settings({"DOCKVOLS_ESX_TIMEOUT": ""}).esx_timeout == 100.0
