"""Configuration errors and TOML validation: the one way every boothop file is checked.

The relay's file, the server's file and the lab's file are all read here (``read_toml``) and
validated through a ``Validator``: typed getters that record a problem and carry on with a
default, so one run reports every mistake in the file. ``finish`` then raises one
``ConfigError`` listing them all, each as ``FILE:LINE: KEY: reason`` (the line when known).

Exit codes are shared by boothop-relay, boothop-server and boothop-lab (sysexits.h names).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")

EXIT_OK = 0
#: A runtime failure (a socket that cannot be bound, a check that found a conflict).
EXIT_FAILURE = 1
#: A bad command line: argparse's own exit status.
EXIT_USAGE = 2
#: sysexits EX_CONFIG: restarting cannot help (systemd: ``RestartPreventExitStatus=78``).
EXIT_CONFIG = 78

BROADCAST = IPv4Address("255.255.255.255")


class DaemonError(Exception):
    """A daemon cannot run, for a reason a person must fix: ``run_daemon`` prints it as one line
    (what is wrong, what to do) and exits EXIT_FAILURE, without a traceback."""


class Problem(NamedTuple):
    """One thing wrong with a configuration: where (file, dotted key, line) and why."""

    path: str
    key: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.key}: {self.reason}"


class ConfigError(ValueError):
    """A configuration that cannot be used; ``problems`` lists all, ``path``/``key``/``reason``
    (and ``line``) describe the first."""

    def __init__(self, path: str | os.PathLike[str], key: str, reason: str,
                 line: int | None = None, *, more: Sequence[Problem] = ()) -> None:
        self.problems = (Problem(os.fspath(path), key, reason, line), *more)
        self.path, self.key, self.reason, self.line = self.problems[0]
        super().__init__("\n".join(map(str, self.problems)))

    @classmethod
    def of(cls, problems: Sequence[Problem]) -> ConfigError:
        first, *more = problems
        return cls(*first, more=more)

    def prefixed(self, program: str) -> str:
        """The problems one a line, each after ``program: ``, as a command prints them."""
        return "\n".join(f"{program}: {problem}" for problem in self.problems)


class TomlFile(NamedTuple):
    data: dict[str, Any]
    text: str


_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = "(at end of document)"


def read_toml(path: str | os.PathLike[str]) -> TomlFile:
    """The file's TOML data and text; ConfigError if it cannot be read or is not TOML."""
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode()
    except OSError as error:
        raise ConfigError(path, "file", f"cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(path, "file", f"not UTF-8: {error.reason}") from None
    try:
        return TomlFile(tomllib.loads(text), text)
    except tomllib.TOMLDecodeError as error:
        # tomllib (3.11) puts the position in the message only: "... (at line 3, column 5)",
        # or "... (at end of document)": the last line then.
        message = str(error)
        match = _POSITION.search(message)
        if match is None:
            line = max(1, len(text.splitlines())) if message.endswith(_AT_END) else None
            raise ConfigError(path, "toml", f"syntax error: {message}", line) from None
        reason = f"syntax error: {message[:match.start()]} (column {match[2]})"
        raise ConfigError(path, "toml", reason, int(match[1])) from None


# The locator. tomllib returns plain dicts without positions, and no TOML parser in the standard
# library keeps them, so this small scanner walks the text once: headers ([table], [[array]]
# with per-parent counting), key lines (dotted and quoted keys), skipping the insides of
# multi-line arrays and strings. It is only run on text tomllib accepted.

Segment = str | int
_BARE = re.compile(r"[A-Za-z0-9_-]+")
_INDEXED = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")


def key_path(key: str) -> tuple[Segment, ...]:
    """``dhcp.subnets[0].pools[1]`` -> ``('dhcp', 'subnets', 0, 'pools', 1)``."""
    path: list[Segment] = []
    for part in key.split("."):
        match = _INDEXED.fullmatch(part)
        if match is None:
            return tuple(path)
        path.append(match[1])
        path.extend(int(index) for index in re.findall(r"\d+", match[2]))
    return tuple(path)


def _keys(text: str, pos: int) -> tuple[list[str], int] | None:
    """A dotted key starting at ``pos`` (bare or quoted parts), and where it ends."""
    parts: list[str] = []
    while True:
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] in "\"'":
            quote = text[pos]
            end = pos + 1
            while end < len(text) and text[end] != quote:
                end += 2 if quote == '"' and text[end] == "\\" else 1
            if end >= len(text):
                return None
            parts.append(text[pos + 1:end])
            pos = end + 1
        else:
            match = _BARE.match(text, pos)
            if match is None:
                return None
            parts.append(match[0])
            pos = match.end()
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos >= len(text) or text[pos] != ".":
            return parts, pos
        pos += 1


class _Scan:
    """What is still open at the end of a line: bracket depth, a multi-line string."""

    def __init__(self) -> None:
        self.depth = 0
        self.string: str | None = None

    @property
    def open(self) -> bool:
        return self.depth > 0 or self.string is not None

    def feed(self, text: str) -> None:
        pos = 0
        while pos < len(text):
            if self.string is not None:
                end = text.find(self.string, pos)
                if end < 0:
                    return
                pos, self.string = end + 3, None
                continue
            char = text[pos]
            if char == "#":
                return
            if text.startswith(('"""', "'''"), pos):
                self.string = text[pos:pos + 3]
                pos += 3
            elif char in "\"'":
                end = pos + 1
                while end < len(text) and text[end] != char:
                    end += 2 if char == '"' and text[end] == "\\" else 1
                pos = end + 1
            else:
                self.depth += (char in "[{") - (char in "]}")
                pos += 1


def key_lines(text: str) -> dict[tuple[Segment, ...], int]:
    """Every table, array element and key of a TOML text, with the line it is defined on."""
    lines: dict[tuple[Segment, ...], int] = {}
    counts: dict[tuple[Segment, ...], int] = {}
    table: tuple[Segment, ...] = ()
    scan = _Scan()

    def concrete(names: Iterable[str]) -> tuple[Segment, ...]:
        """Names resolved against the arrays of tables seen so far (their latest element)."""
        path: tuple[Segment, ...] = ()
        for name in names:
            path += (name,)
            if path in counts:
                path += (counts[path] - 1,)
        return path

    def record(path: tuple[Segment, ...], number: int) -> None:
        for end in range(1, len(path) + 1):
            lines.setdefault(path[:end], number)

    for number, line in enumerate(text.splitlines(), 1):
        if scan.open:
            scan.feed(line)
            continue
        stripped = line.lstrip()
        start = len(line) - len(stripped)
        if stripped.startswith("[["):
            parsed = _keys(line, start + 2)
            if parsed is not None:
                *parents, last = parsed[0]
                array = (*concrete(parents), last)
                counts[array] = counts.get(array, 0) + 1
                table = (*array, counts[array] - 1)
                record(table, number)
        elif stripped.startswith("["):
            parsed = _keys(line, start + 1)
            if parsed is not None:
                table = concrete(parsed[0])
                record(table, number)
        else:
            parsed = _keys(line, start)
            if parsed is not None and line[parsed[1]:parsed[1] + 1] == "=":
                record(table + tuple(parsed[0]), number)
                scan.feed(line[parsed[1] + 1:])
    return lines


def locate(lines: Mapping[tuple[Segment, ...], int], key: str) -> int | None:
    """The line of ``key``, else of its nearest enclosing key or table that the text defines
    (a missing key points at its table; an element of an inline array at the array)."""
    path = key_path(key)
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


class _Report:
    """The problems of one file, shared by a validator and all its children."""

    def __init__(self, source: str, text: str | None) -> None:
        self.source = source
        self.lines = key_lines(text) if text is not None else None
        self.problems: list[Problem] = []

    def add(self, key: str, reason: str) -> None:
        line = locate(self.lines, key) if self.lines is not None else None
        self.problems.append(Problem(self.source, key, reason, line))


class Validator:
    """Typed getters over one TOML table: a bad value is recorded (``fail``) and the getter
    returns its default (None when there is none), so validation goes on to the end."""

    def __init__(self, source: str | os.PathLike[str], data: Mapping[str, Any],
                 text: str | None = None) -> None:
        self._report = _Report(os.fspath(source), text)
        self.data = data
        self.prefix = ""

    def _child(self, prefix: str, data: Mapping[str, Any]) -> Validator:
        child = object.__new__(Validator)
        child._report, child.data, child.prefix = self._report, data, prefix
        return child

    # -- recording ------------------------------------------------------------------------------

    def key(self, name: str = "") -> str:
        """The dotted key of ``name`` in this table (``name`` may start with ``[n]``)."""
        if not self.prefix or not name or name.startswith("["):
            return self.prefix + name
        return f"{self.prefix}.{name}"

    def fail(self, name: str, reason: str) -> None:
        """Record a problem with ``name`` ("" for this table itself)."""
        self._report.add(self.key(name), reason)

    def failed(self, *names: str) -> bool:
        """Whether a problem was recorded at or under any of ``names`` (cross-checks skip then),
        or without names, anywhere in this table."""
        keys = [self.key(name) for name in names or ("",)]
        return any(
            problem.key == key or problem.key.startswith((f"{key}.", f"{key}["))
            for problem in self._report.problems for key in keys
        )

    @property
    def source(self) -> str:
        return self._report.source

    @property
    def problems(self) -> tuple[Problem, ...]:
        return tuple(self._report.problems)

    def finish(self) -> None:
        """Raise one ConfigError with every problem recorded, if there is any."""
        if self._report.problems:
            raise ConfigError.of(self._report.problems)

    # -- getters --------------------------------------------------------------------------------

    def unknown_keys(self, allowed: Iterable[str]) -> None:
        known = sorted(allowed)
        for name in self.data:
            if name not in known:
                self.fail(name, f"unknown key (expected one of: {', '.join(known)})")

    def value(self, name: str, kind: type | tuple[type, ...], what: str,
              required: str | None = None) -> Any:
        """The raw value if it has the TOML type ``kind``; None if absent or recorded as bad."""
        value = self.data.get(name)
        if value is None:
            if required is not None:
                self.fail(name, f"missing: {required}")
            return None
        # bool is an int in Python; TOML keeps them apart and so do we.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            self.fail(name, f"must be {what}, not {type(value).__name__} {value!r}")
            return None
        return value

    def string(self, name: str, default: str | None = None, *, required: str | None = None,
               max_bytes: int | None = None, empty: bool = False) -> str | None:
        value = self.value(name, str, "a string", required)
        if value is None:
            return default
        if not value and not empty:
            self.fail(name, "must not be empty")
            return default
        if max_bytes is not None and len(value.encode()) > max_bytes:
            self.fail(name, f"{len(value.encode())} bytes, at most {max_bytes}")
            return default
        return str(value)

    def strings(self, name: str) -> tuple[str, ...]:
        values = self.value(name, list, "a list of strings") or []
        for index, item in enumerate(values):
            if not isinstance(item, str) or not item:
                self.fail(f"{name}[{index}]", f"must be a non-empty string, not {item!r}")
                return ()
        return tuple(values)

    def choice(self, name: str, choices: Sequence[str], default: T) -> str | T:
        value = self.string(name)
        if value is None:
            return default
        if value not in choices:
            self.fail(name, f"{value!r} is not one of {', '.join(choices)}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.value(name, bool, "true or false")
        return default if value is None else bool(value)

    def integer(self, name: str, default: T, low: int, high: int, *,
                required: str | None = None) -> int | T:
        value = self.value(name, int, "an integer", required)
        if value is None:
            return default
        if not low <= value <= high:
            self.fail(name, f"{value} out of range {low}..{high}")
            return default
        return int(value)

    def number(self, name: str, default: float, low: float, high: float | None = None) -> float:
        value = self.value(name, (int, float), "a number")
        if value is None:
            return default
        if high is None and value < low:
            self.fail(name, f"{value} must be >= {low}")
            return default
        if high is not None and not low <= value <= high:
            self.fail(name, f"{value} out of range {low}..{high}")
            return default
        return float(value)

    def convert(self, name: str, convert: Callable[[Any], T], *,
                required: str | None = None) -> T | None:
        """A value through ``convert``; its ValueError or TypeError becomes the reason."""
        if name not in self.data:
            if required is not None:
                self.fail(name, f"missing: {required}")
            return None
        return self.attempt(name, lambda: convert(self.data[name]))

    def attempt(self, name: str, make: Callable[[], T]) -> T | None:
        """``make()``, or None with its ValueError or TypeError recorded against ``name``."""
        try:
            return make()
        except (ValueError, TypeError) as error:
            self.fail(name, str(error))
            return None

    def address(self, name: str, default: IPv4Address | None = None, *,
                required: str | None = None, usable: bool = False) -> IPv4Address | None:
        """An IPv4 address; ``usable`` refuses 0.0.0.0, multicast and broadcast."""
        value = self.value(name, str, "an IPv4 address string", required)
        if value is None:
            return default
        address = self._address(name, value, usable)
        return default if address is None else address

    def _address(self, name: str, value: object, usable: bool) -> IPv4Address | None:
        if not isinstance(value, str):
            self.fail(name, f"must be an IPv4 address string, not {value!r}")
            return None
        try:
            address = IPv4Address(value)
        except ValueError:
            self.fail(name, f"not an IPv4 address: {value!r}")
            return None
        if usable and (address.is_unspecified or address.is_multicast or address == BROADCAST):
            self.fail(name, f"{value} cannot be used here (unspecified, multicast or broadcast)")
            return None
        return address

    def network(self, name: str, *, required: str | None = None) -> IPv4Network | None:
        """An IPv4 network in CIDR form, without host bits (``10.0.1.0/24``)."""
        value = self.value(name, str, "an IPv4 network string", required)
        if value is None:
            return None
        try:
            return IPv4Network(value)
        except ValueError as error:
            self.fail(name, f"{error} (expected a network like 10.0.1.0/24)")
            return None

    def addresses(self, name: str) -> tuple[IPv4Address, ...]:
        """A list of usable IPv4 addresses, each listed once."""
        result: list[IPv4Address] = []
        for index, item in enumerate(self.value(name, list, "a list of IPv4 addresses") or []):
            address = self._address(f"{name}[{index}]", item, usable=True)
            if address in result:
                self.fail(f"{name}[{index}]", f"{address} is listed twice")
            elif address is not None:
                result.append(address)
        return tuple(result)

    def octets(self, name: str, max_len: int = 255) -> bytes | None:
        """A string sent as UTF-8, 1..max_len octets."""
        value = self.string(name)
        if value is None:
            return None
        if len(value.encode()) > max_len:
            self.fail(name, f"{len(value.encode())} octets, at most {max_len}")
            return None
        return value.encode()

    def hex_octets(self, name: str, max_len: int = 255) -> bytes | None:
        """``52:54:00:aa:bb:cc``, ``52-54-...`` or ``525400aabbcc``: 1..max_len octets."""
        return self.convert(name, lambda value: parse_hex(value, max_len))

    def table(self, name: str, *, required: str | None = None) -> Validator | None:
        """A sub-table's validator (keys prefixed ``name.``); None if absent or not a table."""
        value = self.value(name, dict, "a table", required)
        return None if value is None else self._child(self.key(name), value)

    def tables(self, name: str) -> list[Validator]:
        """An array of tables (``[[name]]``): one validator each, keys prefixed ``name[n].``."""
        values = self.data.get(name, [])
        if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
            self.fail(name, f"must be an array of tables ([[{self.key(name)}]])")
            return []
        return [self._child(self.key(f"{name}[{n}]"), value) for n, value in enumerate(values)]


def parse_hex(value: object, max_len: int = 255) -> bytes:
    """Hex octets, optionally separated by ``:`` or ``-``; the ValueError or TypeError says
    what is wrong."""
    if not isinstance(value, str):
        raise TypeError(f"must be hex octets like '52:54:00:aa:bb:cc', not {value!r}")
    try:
        data = bytes.fromhex(value.replace(":", "").replace("-", ""))
    except ValueError:
        raise ValueError(f"not hex octets: {value!r}") from None
    if not 1 <= len(data) <= max_len:
        raise ValueError(f"{len(data)} octets, expected 1..{max_len}")
    return data


class Listen(NamedTuple):
    """A TCP listening address: ``HOST:PORT`` (the metrics endpoint)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_listen(value: object) -> Listen:
    """``127.0.0.1:9267`` or ``0.0.0.0:9267``; the ValueError or TypeError says what is wrong."""
    if not isinstance(value, str):
        raise TypeError(f"must be a string HOST:PORT, not {value!r}")
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (a port 1..65535, e.g. 127.0.0.1:9267)")
    try:
        IPv4Address(host)
    except ValueError:
        raise ValueError(f"{host!r} in {value!r} is not an IPv4 address") from None
    return Listen(host, int(port))


def validate_section(source: str | os.PathLike[str], name: str, table: object,
                     read: Callable[[Validator], T | None]) -> T:
    """Validate one top-level table on its own (a caller or test holding just ``[name]``);
    ``read`` returns None only after recording why."""
    root = Validator(source, {name: table})
    section = root.table(name, required="a table")
    result = None if section is None else read(section)
    root.finish()
    assert result is not None, "read() returned None without recording a problem"
    return result
