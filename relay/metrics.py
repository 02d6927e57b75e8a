"""The one metrics registry of a daemon: Prometheus exposition of the counters it already keeps.

No second bookkeeping. Each part of a daemon (the relay; the server's dhcp, pxe and tftp)
registers the same snapshot function its stats line and stats file use, with its ``Family``
entries: which value of the snapshot becomes which metric, and which keys of the nested
dictionaries become labels. A scrape calls them (each takes its part's lock for one copy). No
prometheus object is touched per packet: the hot path only increments the plain counters it
always did, and ``Histogram`` counts observations into fixed buckets the same way.

``boothop-relay status`` and ``boothop-server status`` read the endpoint back (``status``): what
Prometheus sees is what a person sees, for both daemons alike, from any host that may scrape.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import sys
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import trio
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .settings import EXIT_FAILURE, EXIT_OK, Listen

Snapshot = Mapping[str, Any]
Kind = Literal["counter", "gauge", "histogram"]

#: Seconds: a reply from a helper on the same LAN takes well under a millisecond, a server that
#: pings an address before offering it a second or more.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Seconds of one synced lease transaction.
COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
#: Lease rows per transaction (a burst is at most 128 datagrams).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Histogram:
    """Observations counted into fixed buckets, as plain numbers (bucket ``i`` holds the values
    ``<= bounds[i]`` and above the one before; the last one the rest)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> dict[str, Any]:
        return {"le": list(self.bounds), "counts": list(self.counts), "sum": self.sum}


@dataclasses.dataclass(frozen=True, slots=True)
class Family:
    """One metric family read from a snapshot.

    ``path`` walks the nested snapshot: a plain key descends into it, ``{label}`` iterates the
    keys of that level as the values of ``label``. ``name`` is without ``_total`` (a counter
    gets it); a histogram's value is a ``Histogram.snapshot()``.
    """

    name: str
    kind: Kind
    help: str
    path: tuple[str, ...]

    @property
    def labels(self) -> list[str]:
        return [step[1:-1] for step in self.path if step.startswith("{")]

    def metric(self, snapshot: Snapshot) -> Metric:
        labels = self.labels
        if self.kind == "histogram":
            histograms = HistogramMetricFamily(self.name, self.help, labels=labels)
            for values, value in _walk(snapshot, self.path, ()):
                histograms.add_metric(list(values), _buckets(value), value["sum"])
            return histograms
        family = (CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily)(
            self.name, self.help, labels=labels)
        for values, value in _walk(snapshot, self.path, ()):
            family.add_metric(list(values), float(value))
        return family


def _walk(value: Any, path: Sequence[str], labels: tuple[str, ...]
          ) -> Iterator[tuple[tuple[str, ...], Any]]:
    if not path:
        yield labels, value
        return
    if not isinstance(value, Mapping):
        return
    step, rest = path[0], path[1:]
    if step.startswith("{"):
        for key, inner in value.items():
            yield from _walk(inner, rest, (*labels, str(key)))
    elif step in value:
        yield from _walk(value[step], rest, labels)


def _buckets(histogram: Mapping[str, Any]) -> list[tuple[str, float]]:
    cumulative, buckets = 0, []
    for bound, count in zip([*histogram["le"], "+Inf"], histogram["counts"], strict=True):
        cumulative += count
        buckets.append((str(float(bound)) if bound != "+Inf" else bound, cumulative))
    return buckets


#: The shell ring's LoopCounters of every part, one family each across the parts (labelled by
#: part and port): a part's snapshot holds them as ``{"loops": {port: LoopCounters.snapshot()}}``.
LOOP_FAMILIES = tuple(
    Family(f"boothop_loop_{name}", "counter", help, ("{service}", "loops", "{port}", name))
    for name, help in (
        ("receive_errors", "Receive errors on a socket (e.g. ICMP port unreachable)"),
        ("truncated", "Datagrams larger than the receive buffer, dropped"),
        ("core_errors", "Exceptions out of a core (a bug), each costing one datagram"),
        ("kernel_drops", "Datagrams the kernel dropped before the socket (full queue, "
         "SO_RXQ_OVFL)"),
    )
)


class SnapshotCollector(Collector):
    """The families of every registered part, read at scrape time."""

    def __init__(self) -> None:
        self.parts: dict[str, tuple[Callable[[], Snapshot], tuple[Family, ...]]] = {}

    def collect(self) -> Iterator[Metric]:
        parts = list(self.parts.items())
        snapshots = {name: read() for name, (read, _) in parts}
        for family in LOOP_FAMILIES:
            yield family.metric(snapshots)
        for name, (_, families) in parts:
            for family in families:
                yield family.metric(snapshots[name])


class Metrics:
    """A daemon's registry: its parts' snapshots and the process's own figures."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.collector = SnapshotCollector()
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)

    @contextlib.contextmanager
    def part(self, name: str, read: Callable[[], Snapshot],
             families: Iterable[Family]) -> Iterator[None]:
        """``read`` is scraped as the part ``name``, through ``families``, while the block
        runs."""
        self.collector.parts[name] = read, tuple(families)
        try:
            yield
        finally:
            self.collector.parts.pop(name, None)

    @contextlib.contextmanager
    def serve(self, listen: Listen) -> Iterator[None]:
        """The HTTP endpoint (``/metrics``, any path) on its own thread while the block runs."""
        try:
            server, thread = start_http_server(listen.port, listen.host, self.registry)
        except OSError as error:
            raise OSError(error.errno, f"metrics endpoint {listen}: "
                          f"{error.strerror or error}") from error
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()
            thread.join()

    async def run(self, listen: Listen,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """``serve`` as a task: serving once started, until cancelled."""
        with self.serve(listen):
            task_status.started()
            await trio.sleep_forever()


def part(metrics: Metrics | None, name: str, read: Callable[[], Snapshot],
         families: Iterable[Family]) -> contextlib.AbstractContextManager[None]:
    """``Metrics.part``, or nothing when the daemon has no endpoint."""
    return contextlib.nullcontext() if metrics is None else metrics.part(name, read, families)


# -- status ------------------------------------------------------------------------------------
def scrape(listen: Listen, timeout: float = 5.0) -> str:
    """The exposition text of a running daemon's endpoint (0.0.0.0 is asked on loopback)."""
    host = "127.0.0.1" if listen.host in ("", "0.0.0.0") else listen.host
    with urllib.request.urlopen(f"http://{host}:{listen.port}/metrics", timeout=timeout) as reply:
        return str(reply.read().decode())


def print_status(program: str, listen: Listen, prefix: str) -> int:
    """The ``status`` command of both daemons: scrape ``listen`` and print its ``prefix``
    metrics for a person; the exit status."""
    try:
        text = scrape(listen)
    except OSError as error:  # urllib's URLError included
        print(f"{program}: cannot read http://{listen}/metrics: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(status(text, prefix))
    return EXIT_OK


def status(text: str, prefix: str) -> str:
    """The ``prefix`` metrics of an exposition, for a person: one line per sample (histograms
    as count, mean and the bucket holding the median), zero samples left out."""
    lines: list[str] = []
    for family in text_string_to_metric_families(text):
        if not family.name.startswith((prefix, "boothop_loop_")):
            continue
        if family.type == "histogram":
            lines.extend(_histogram_lines(family))
            continue
        for sample in family.samples:
            if sample.name.endswith("_created") or not sample.value:
                continue
            lines.append(f"{_series(sample.name, sample.labels):<60} {sample.value:g}")
    return "\n".join(lines) if lines else "(no counts yet)"


def _series(name: str, labels: Mapping[str, str]) -> str:
    inner = ",".join(f"{key}={value}" for key, value in labels.items())
    return f"{name}{{{inner}}}" if inner else name


def _histogram_lines(family: Metric) -> Iterator[str]:
    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for sample in family.samples:
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        entry = series.setdefault(tuple(sorted(labels.items())), {"buckets": []})
        if sample.name.endswith("_bucket"):
            entry["buckets"].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_count"):
            entry["count"] = sample.value
        elif sample.name.endswith("_sum"):
            entry["sum"] = sample.value
    for key, entry in series.items():
        count = entry.get("count", 0.0)
        if not count:
            continue
        median = next(bound for bound, cumulative in entry["buckets"] if cumulative >= count / 2)
        yield (f"{_series(family.name, dict(key)):<60} count {count:g}, mean "
               f"{entry.get('sum', 0.0) / count:.4g}, median <= {median:g}")
