from __future__ import annotations

import tomllib

import pytest

from lorawatch.errors import ConfigError
from lorawatch.settings import SecretRef, Settings, load_settings, render_default_toml


def write(tmp_path, text: str):
    path = tmp_path / "lorawatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_hold_without_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("LORAWATCH_HOME")
    settings = load_settings()
    assert settings.source is None
    assert settings.canary.drift_p_value == 0.05
    assert settings.registry.archive_after_days == 90
    assert settings.database_url.endswith("/.lorawatch/lorawatch.db")


def test_the_file_in_the_working_directory_is_found(tmp_path):
    write(tmp_path, "[canary]\nbatch_size = 4\n")
    settings = load_settings()
    assert settings.canary.batch_size == 4
    assert settings.source == tmp_path / "lorawatch.toml"


def test_the_batch_size_defaults_to_what_the_device_needs(tmp_path):
    """Unset: 32 prompts a batch where the run goes to GPUs, 8 on the CPU; set or passed: as given."""
    import torch

    from lorawatch.monitors.canary import RunOptions

    settings = load_settings()
    assert settings.canary.batch_size is None
    assert RunOptions.from_settings(settings, device="cpu").batch_size == 8
    assert RunOptions.from_settings(settings, device="cpu", backend="ray").batch_size == 8
    assert RunOptions.from_settings(settings, device="cuda").batch_size == 32
    assert RunOptions.from_settings(settings, device="auto", backend="ray").batch_size == 32
    assert RunOptions.from_settings(settings, device="auto").batch_size == (32 if torch.cuda.is_available() else 8)
    assert RunOptions.from_settings(settings, device="cuda", batch_size=5).batch_size == 5
    write(tmp_path, "[canary]\nbatch_size = 4\n")
    assert RunOptions.from_settings(load_settings(), device="cuda").batch_size == 4


def test_environment_overrides_home_and_database(tmp_path, monkeypatch):
    write(tmp_path, 'home = "/elsewhere"\n[database]\nurl = "sqlite:///a.db"\n')
    monkeypatch.setenv("LORAWATCH_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("LORAWATCH_DATABASE_URL", "sqlite:///b.db")
    settings = load_settings()
    assert settings.home_dir == (tmp_path / "h").resolve()
    assert settings.database_url == "sqlite:///b.db"


def test_lorawatch_config_names_the_file(tmp_path, monkeypatch):
    other = tmp_path / "conf" / "x.toml"
    other.parent.mkdir()
    other.write_text("[dashboard]\nport = 9000\n")
    monkeypatch.setenv("LORAWATCH_CONFIG", str(other))
    assert load_settings().dashboard.port == 9000


def test_a_missing_lorawatch_config_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAWATCH_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="nope.toml.*does not exist"):
        load_settings()


BAD_FILES = [
    # (content, expected line, words the message must hold)
    ('home = "x\n', 1, ["invalid TOML"]),
    ("[canary]\nbatch_size = 8\nbatchsize = 3\n", 3, ['unknown key "canary.batchsize"', "batch_size"]),
    ("[canary]\nbatch_size = -1\n", 2, ['"canary.batch_size"', "-1", "greater than 0"]),
    ('[canary]\ndevice = "tpu"\n', 2, ['"canary.device"', "'tpu'", "auto"]),
    ('[dashboard]\nport = "http"\n', 2, ['"dashboard.port"', "integer"]),
    ("colour = 3\n", 1, ['unknown key "colour"', "database"]),
]


@pytest.mark.parametrize("content,line,words", BAD_FILES)
def test_a_bad_file_names_file_line_key_and_fix(tmp_path, content, line, words):
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ")
    assert "fix:" in message
    for word in words:
        assert word in message
    assert "\n" not in message


def test_invalid_utf8_is_a_config_error(tmp_path):
    (tmp_path / "lorawatch.toml").write_bytes(b"home = '\xff'\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings()


def test_secret_refs_resolve_from_the_environment_and_never_print_their_value(monkeypatch):
    ref = SecretRef(env="LW_TEST_SECRET")
    with pytest.raises(ConfigError, match="LW_TEST_SECRET is not set"):
        ref.resolve()
    monkeypatch.setenv("LW_TEST_SECRET", "s3cr3t-value")
    assert ref.resolve() == "s3cr3t-value"
    assert "s3cr3t" not in repr(ref) and "s3cr3t" not in str(ref)
    assert "s3cr3t" not in ref.model_dump_json()


def test_the_default_file_documents_every_setting_and_loads_back(tmp_path):
    text = render_default_toml()
    parsed = tomllib.loads(text)
    assert Settings.model_validate(parsed) == Settings()
    for name, field in Settings.model_fields.items():
        if name == "source":
            continue
        sub = field.annotation
        if name == "monitors":
            assert field.description in text
            continue
        if not (isinstance(sub, type) and hasattr(sub, "model_fields")):
            assert field.description, f"setting {name} has no description"
        else:
            assert sub.__doc__, f"section [{name}] has no docstring"
            assert f"[{name}]" in text
            for key, subfield in sub.model_fields.items():
                assert subfield.description, f"setting {name}.{key} has no description"
                assert subfield.description in text
                nested = subfield.annotation
                if isinstance(nested, type) and hasattr(nested, "model_fields"):  # [canary.ray], [alerts.route]
                    assert nested.__doc__ and f"[{name}.{key}]" in text
                    for inner, innerfield in nested.model_fields.items():
                        assert innerfield.description and innerfield.description in text
                        assert f"{innerfield.alias or inner} =" in text
                else:
                    assert f"{key} =" in text


def test_config_show_never_prints_the_database_password_taken_from_the_environment(cli, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    monkeypatch.setenv("LORAWATCH_DATABASE_URL", "postgresql+psycopg://bob:S3cretPW@db.example:5432/lw")
    for args in (("config", "show", "--json"), ("config", "show")):
        result = cli(*args)
        assert result.code == 0, result.err
        assert "S3cretPW" not in result.out + result.err and "bob:***@db.example" in result.out
    assert (
        cli("config", "show", "--json").json()["database"]["url"] == "postgresql+psycopg://bob:***@db.example:5432/lw"
    )
    monkeypatch.setenv("LORAWATCH_DATABASE_URL", url)
    assert cli("config", "show", "--json").json()["database_url_in_force"] == url
