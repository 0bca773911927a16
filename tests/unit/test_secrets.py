"""mlops_cli.secrets: secrets read from one place, and masked before they are shown."""

import pytest
from pydantic import SecretStr

from mlops_cli.errors import ConfigError
from mlops_cli.secrets import MASK, redact, secret_value, url_without_userinfo
from mlops_cli.settings import BuildSettings


def test_secret_value_inline_or_from_a_file(tmp_path):
    assert secret_value(SecretStr("  s3cret\n"), None, "x.token_file") == "s3cret"
    assert secret_value(SecretStr("   "), None, "x.token_file") is None
    assert secret_value(None, None, "x.token_file") is None
    mounted = tmp_path / "token"
    mounted.write_text("from-file\n")
    assert secret_value(None, mounted, "x.token_file") == "from-file"
    assert secret_value(SecretStr("inline"), mounted, "x.token_file") == "inline"  # inline wins
    with pytest.raises(ConfigError, match=r"^x\.token_file .*/missing: No such file or directory$"):
        secret_value(None, tmp_path / "missing", "x.token_file")


def test_the_registry_password_is_read_with_it(tmp_path):
    mounted = tmp_path / "pw"
    mounted.write_text("hunter2\n")
    assert BuildSettings(password_file=mounted).registry_password() == "hunter2"
    assert BuildSettings(password=SecretStr("pw ")).registry_password() == "pw"
    with pytest.raises(ConfigError, match=r"^build\.password_file "):
        BuildSettings(password_file=tmp_path / "nope").registry_password()
    assert "hunter2" not in repr(BuildSettings(password=SecretStr("hunter2")))


def test_redact_masks_every_secret_longest_first():
    text = "GET https://ci/job/x/build?token=abc123 as bob:abc123xyz failed"
    assert (
        redact(text, "abc123", "abc123xyz", None, "") == f"GET https://ci/job/x/build?token={MASK} as bob:{MASK} failed"
    )
    assert redact("nothing here", None) == "nothing here"


@pytest.mark.parametrize(
    "url, shown",
    [
        ("http://user:pw@10.0.0.1:6443", "http://10.0.0.1:6443"),
        ("https://token@api.example:443/x", "https://api.example:443/x"),
        ("user:pw@host:6443", "host:6443"),
        ("https://api.example:6443/a@b", "https://api.example:6443/a@b"),
        ("https://api.example", "https://api.example"),
    ],
)
def test_url_without_userinfo(url, shown):
    assert url_without_userinfo(url) == shown
