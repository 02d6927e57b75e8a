"""The layering of ARCHITECTURE.md, held by walking every import (ast) of ``relay`` and ``server``.

Rings, dependencies pointing inward: ``relay.wire`` (codec) imports nothing of ours; the sans-IO
core imports the wire and itself, never I/O, a clock, logging or the shell; one module imports
pyroute2; ``server`` imports ``relay.wire`` and ``relay.settings`` (configuration errors and TOML
validation) and nothing else of ``relay``; ``relay`` never imports ``server``. Imports inside
functions and under ``if TYPE_CHECKING`` count too.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("relay", "server")

CORE = {
    f"relay.{name}" for name in ("engine", "actions", "config", "classes", "interfaces", "drops",
                                 "counters", "replies", "giaddr", "broadcast", "engine6",
                                 "datapath", "throttle", "bootwatch", "enginebase")
}
#: What a sans-IO module must not touch: event loops, sockets, netlink, logging, clock, processes.
IO_MODULES = {
    "trio",
    "socket",
    "pyroute2",
    "structlog",
    "logging",
    "time",
    "asyncio",
    "select",
    "selectors",
    "threading",
    "subprocess",
}
PYROUTE2_ALLOWED = ("relay.netlink", "relay.lab")
#: The server's sans-IO cores: DHCP decisions, proxyDHCP decisions, the TFTP state machines.
#: (File access goes through the small source/sink interfaces; paths.py is the shell's part.)
SERVER_CORE = {
    *(f"server.dhcp.{name}" for name in ("core", "actions", "addressing", "lease", "reply",
                                         "deadlines", "leasebook")),
    *(f"server.pxe.{name}" for name in ("proxy", "bootfile")),
    *(f"server.tftp.{name}" for name in ("packet", "negotiation", "transfer", "write", "source")),
    "server.http.respond",
    *(f"server.dhcp6.{name}" for name in ("core", "actions", "lease")),
}
#: Besides the IO modules, a server core must not open databases or files itself.
SERVER_CORE_FORBIDDEN = IO_MODULES | {"sqlite3", "os", "pathlib", "server.leasestore"}


def module_name(path: Path) -> str:
    """The import name of a file of the tree: ``relay/wire/codes.py`` is
    ``boothop.relay.wire.codes``."""
    parts = ["boothop", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[str]:
    """Absolute names of everything the file imports; ``from a import b`` yields ``a.b``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    """Every module of the tree and its imports, names relative to ``boothop``."""
    modules: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path).removeprefix("boothop.")
            modules[name] = {target.removeprefix("boothop.") for target in imports_of(path)}
    return modules


GRAPH = graph()


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(modules: list[str], forbidden: Callable[[str], bool]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module in modules
        for target in GRAPH[module]
        if forbidden(target)
    )


def test_the_walker_sees_the_tree() -> None:
    """Guard against a vacuous pass: the walk finds the modules and their known imports."""
    assert GRAPH.keys() >= CORE
    assert "relay.wire" in GRAPH and "relay.wire.message" in GRAPH and "server" in GRAPH
    assert any(within(t, "relay.wire") for t in GRAPH["relay.engine"])  # relative import resolved
    assert "relay.engine.RelayEngine" in GRAPH["relay.service"]
    assert any(within(t, "pyroute2") for t in GRAPH["relay.netlink"])


def test_our_packages_are_imported_by_their_boothop_names() -> None:
    """``relay`` and ``server`` are folders, not import names: nothing imports them bare."""
    bare = sorted(
        f"{module_name(path)} imports {target}"
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        for target in imports_of(path)
        if target.split(".")[0] in PACKAGES
    )
    assert bare == []


def test_resolution_of_relative_imports() -> None:
    assert module_name(ROOT / "relay" / "wire" / "__init__.py") == "boothop.relay.wire"
    assert "relay.wire.codes.Opt" in GRAPH["relay.wire"]  # "from .codes import Opt" in a package
    assert (
        "relay.drops.DropReason" in GRAPH["relay.actions"]
    )  # "from .drops import ..." in a module


def test_wire_imports_nothing_of_boothop() -> None:
    wire = [m for m in GRAPH if within(m, "relay.wire")]
    found = violations(
        wire,
        lambda t: (within(t, "relay") and not within(t, "relay.wire")) or within(t, "server"),
    )
    assert found == []


def test_wire_does_no_io() -> None:
    wire = [m for m in GRAPH if within(m, "relay.wire")]
    assert violations(wire, lambda t: t.split(".")[0] in IO_MODULES) == []


@pytest.mark.parametrize("module", sorted(CORE))
def test_relay_core_is_sans_io(module: str) -> None:
    assert violations([module], lambda t: t.split(".")[0] in IO_MODULES) == []


@pytest.mark.parametrize("module", sorted(CORE))
def test_relay_core_imports_only_the_core_and_the_wire(module: str) -> None:
    """The shell (service, netlink, cli, configfile, sockets, logs, lab) imports the core only."""

    def outward(target: str) -> bool:
        if not within(target, "relay"):
            return within(target, "server")
        return not within(target, "relay.wire") and not any(within(target, c) for c in CORE)

    assert violations([module], outward) == []


def test_only_the_netlink_module_and_the_lab_import_pyroute2() -> None:
    others = [m for m in GRAPH if not any(within(m, allowed) for allowed in PYROUTE2_ALLOWED)]
    assert violations(others, lambda t: within(t, "pyroute2")) == []


def test_relay_never_imports_server() -> None:
    relay = [m for m in GRAPH if within(m, "relay")]
    assert violations(relay, lambda t: within(t, "server")) == []


#: What the server may import of the relay package: the codec, the shell ring (with its metrics
#: registry), the settings, the builder of the shipped C.
SHARED_WITH_SERVER = ("relay.wire", "relay.shell", "relay.metrics", "relay.settings",
                      "relay.compiled")


def test_server_imports_only_the_wire_shell_ring_and_settings_of_relay() -> None:
    server = [m for m in GRAPH if within(m, "server")]
    found = violations(server, lambda t: within(t, "relay")
                       and not any(within(t, shared) for shared in SHARED_WITH_SERVER))
    assert found == []
    assert any(within(t, "relay.settings") for t in GRAPH["server.config"])  # not vacuous
    assert any(within(t, "relay.shell") for t in GRAPH["server.dhcp.service"])


@pytest.mark.parametrize("module", ["relay.shell", "relay.metrics"])
def test_the_shell_ring_imports_only_the_wire_and_the_settings(module: str) -> None:
    found = violations([module], lambda t: (
        within(t, "relay") and not within(t, "relay.wire") and not within(t, "relay.settings"))
        or within(t, "server"))
    assert found == []


def test_the_builder_of_the_shipped_c_imports_nothing_of_boothop() -> None:
    assert violations(["relay.compiled"], lambda t: within(t, "relay") or within(t, "server")) \
        == []


def test_settings_imports_only_the_wire_of_boothop_and_does_no_io() -> None:
    """The server imports relay.settings: it must not drag the relay's shell along."""
    found = violations(
        ["relay.settings"],
        lambda t: (within(t, "relay") and not within(t, "relay.wire")) or within(t, "server")
        or t.split(".")[0] in IO_MODULES,
    )
    assert found == []


#: Names only the shell ring may use: receiving with IP_PKTINFO is written once.
RECEIVE_NAMES = ("IP_PKTINFO", "recvmsg", "SO_REUSEADDR")


@pytest.mark.parametrize("package", PACKAGES)
def test_only_the_shell_ring_receives_with_pktinfo(package: str) -> None:
    """Every daemon receives through the shell ring (the lab's client emulators are not daemons)."""
    found = sorted(
        f"{module_name(path)} uses {name}"
        for path in (ROOT / package).rglob("*.py")
        if module_name(path) != "boothop.relay.shell"
        and not within(module_name(path), "boothop.relay.lab")
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        for name in RECEIVE_NAMES
        if (isinstance(node, ast.Name) and node.id == name)
        or (isinstance(node, ast.Attribute) and node.attr == name)
    )
    assert found == []


def test_server_core_modules_exist() -> None:
    assert GRAPH.keys() >= SERVER_CORE


@pytest.mark.parametrize("module", sorted(SERVER_CORE))
def test_server_core_is_sans_io(module: str) -> None:
    assert violations(
        [module],
        lambda t: t.split(".")[0] in SERVER_CORE_FORBIDDEN
        or any(within(t, f) for f in SERVER_CORE_FORBIDDEN if "." in f)
        or within(t, "server.app") or t.endswith(".service"),
    ) == []


#: Every reason a core can drop or refuse a packet for, where its enum lives.
DROP_ENUMS = [
    ("relay/drops.py", "DropReason"),
    ("relay/broadcast.py", "UdpDrop"),
    ("server/dhcp/actions.py", "DropReason"),
    ("server/dhcp6/actions.py", "Drop6Reason"),
    ("server/pxe/proxy.py", "Drop"),
    ("server/tftp/admission.py", "Refusal"),
    ("server/tftp/transfer.py", "Ignored"),
]


@pytest.mark.parametrize(("where", "enum_name"), DROP_ENUMS)
def test_every_drop_reason_is_emitted_somewhere(where: str, enum_name: str) -> None:
    """A reason nothing emits is a counter that is always zero: dead code an operator reads."""
    tree = ast.parse((ROOT / where).read_text())
    members = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name == enum_name
        for statement in node.body
        if isinstance(statement, ast.Assign)
        for target in statement.targets
        if isinstance(target, ast.Name)
    }
    package = ROOT / where.split("/")[0]
    used = {
        node.attr
        for path in package.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id == enum_name
    }
    assert members and sorted(members - used) == []


def test_test_modules_have_unique_basenames() -> None:
    """pytest imports test files by basename (rootdir, no packages): two alike fail collection."""
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert sorted(name for name in set(names) if names.count(name) > 1) == []


def test_every_package_of_the_tree_is_listed_for_the_wheel() -> None:
    """setuptools ships only the packages pyproject.toml lists; an editable install (the dev venv,
    CI) finds an unlisted one anyway, so only this test sees it missing from a real install."""
    import tomllib
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = set()
    for name, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join([name, *relative.parts]))
    assert on_disk == set(setuptools["packages"])
