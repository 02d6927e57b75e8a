"""The [http] table: the root defaults to [tftp]'s, every problem as FILE:LINE: KEY: reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from boothop.relay.settings import EXIT_CONFIG, ConfigError
from boothop.server.cli import main
from boothop.server.config import check_reload, load_config
from boothop.server.http.config import HttpConfig, parse_http


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pxe.toml"
    path.write_text(text)
    return path


def test_the_root_defaults_to_the_tftp_root(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, '[tftp]\nroot = "/srv/tftp"\n[http]\nport = 8080\n')))
    assert config.http == HttpConfig(root="/srv/tftp", port=8080)


def test_an_own_root_and_an_ipv6_address(tmp_path: Path) -> None:
    config = parse_http({"root": "/srv/http", "address": "::"}, "x.toml", "/srv/tftp")
    assert (config.root, config.address) == ("/srv/http", "::")


def test_without_tftp_the_root_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(write(tmp_path, "[http]\nport = 8080\n")))
    assert [p.key for p in info.value.problems] == ["http.root"]


def test_every_problem_with_its_line_and_exit_78(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, """[tftp]
root = "/srv/tftp"
[http]
address = "10.0.0"
port = 0
header_timeout = -1
max_connections = 4
max_per_client = 8
bogus = true
""")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert sorted((p.key, p.line) for p in info.value.problems) == [
        ("http.address", 4), ("http.bogus", 9), ("http.header_timeout", 6),
        ("http.max_per_client", 8), ("http.port", 5)]
    assert main(["check", "-c", str(path)]) == EXIT_CONFIG == 78
    assert f"{path}:4: http.address: not an IPv4 or IPv6 address" in capsys.readouterr().err


def test_changing_http_needs_a_restart(tmp_path: Path) -> None:
    first = load_config(str(write(tmp_path, '[tftp]\nroot = "/srv"\n[http]\nport = 8080\n')))
    second = load_config(str(write(tmp_path, '[tftp]\nroot = "/srv"\n[http]\nport = 8081\n')))
    with pytest.raises(ConfigError, match="changing \\[http\\] needs a restart"):
        check_reload(first, second)


def test_pxe_gives_http_clients_urls_on_this_hosts_http_port(tmp_path: Path) -> None:
    text = '[pxe]\nserver_address = "10.61.2.10"\n[tftp]\nroot = "/srv"\n[http]\nport = {}\n'
    for port, url in ((8080, "http://10.61.2.10:8080/"), (80, "http://10.61.2.10/")):
        pxe = load_config(str(write(tmp_path, text.format(port)))).pxe
        assert pxe is not None and pxe.http_url == url
