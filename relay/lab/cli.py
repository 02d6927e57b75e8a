"""boothop-lab: build a routed network-boot topology in namespaces and boot real clients through it.

`up` records the namespaces it creates in /run/boothop-lab/<prefix>.netns.json; `down` removes
exactly those (a namespace with the prefix that boothop-lab did not create is left alone). `demo`
keeps each run (report.html, logs/) in a run directory: --run-dir, else
$XDG_STATE_HOME/boothop-lab/runs/<time>-<prefix>, or /var/lib/boothop-lab/runs/<time>-<prefix>
as root (~/.local/state/boothop-lab/runs/... otherwise). Nothing is written to the current
directory.

With --containers [IMAGE] (`up`, `demo`), the relay and the servers run as containers of boothop's
image (default localhost/boothop:latest, built by config/container/build-image) with podman, each in
its host's namespace, with only NET_RAW and NET_BIND_SERVICE; `down` removes them by container ID.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from boothop.relay.settings import EXIT_CONFIG, EXIT_FAILURE, ConfigError

from .containers import DEFAULT_IMAGE, image_problem
from .initramfs import BUSYBOX, InitramfsError, kernel
from .lab import Lab, run_demo
from .locations import default_lab_file, find_program, missing_boot_files, new_run_dir
from .report import comparison_table
from .results import ClientResult
from .scenarios import SCENARIOS, run_scenario
from .spec import LabSpec, load_lab
from .topology import TopologyError

NEEDED = {
    "ip": "iproute2", "qemu-system-x86_64": "qemu-system-x86", "udhcpc": "udhcpc",
    "busybox": "busybox-static", "dhclient": "isc-dhcp-client", "dhcrelay": "isc-dhcp-relay",
    "boothop-server": "boothop (pip install -e .)", "boothop-relay": "boothop (pip install -e .)",
}


def missing_requirements(spec: LabSpec) -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root: the lab creates network namespaces")
    kinds = {c.kind for c in spec.clients}
    for command, package in NEEDED.items():
        if command == "qemu-system-x86_64" and "pxe" not in kinds:
            continue
        if command == "dhcrelay" and spec.relay != "dhcrelay":
            continue
        if find_program(command) is None:
            problems.append(
                f"{command} not found (Debian package {package}; `bash .ci/install` installs it)"
            )
    if kinds & {"pxe", "pxe-spec"}:
        problems += missing_boot_files()
    if "pxe" in kinds:
        if not Path("/usr/lib/ipxe/qemu").is_dir():
            problems.append("iPXE ROMs not found in /usr/lib/ipxe/qemu (Debian package ipxe-qemu)")
        try:
            kernel()
        except InitramfsError as error:
            problems.append(str(error))
        if not BUSYBOX.is_file():
            problems.append(f"{BUSYBOX} not found (Debian package busybox-static)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="boothop-lab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--config", type=Path,
                        help=f"lab topology (TOML); default: the installed {default_lab_file()}")
    parser.add_argument(
        "--relay", choices=("boothop", "dhcrelay"), help="override the file's relay"
    )
    contained = argparse.ArgumentParser(add_help=False)
    contained.add_argument(
        "--containers", nargs="?", const=DEFAULT_IMAGE, metavar="IMAGE",
        help=f"run the relay and the servers as containers of IMAGE (default {DEFAULT_IMAGE})",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up", parents=[contained], help="build the topology and start the daemons (idempotent)"
    )
    sub.add_parser("down", help="remove the namespaces (links, processes) that `up` created")
    sub.add_parser("status", help="what is built and running, and the relay's counters")
    demo = sub.add_parser(
        "demo", parents=[contained], help="up, boot every client, report, down"
    )
    demo.add_argument("--run-dir", type=Path,
                      help="keep the run here (report.html with SVG ladder diagrams, logs/); "
                           "default: a new directory under the runs directory (see above)")
    demo.add_argument(
        "--compare",
        action="store_true",
        help="run the demo with boothop-relay and with ISC dhcrelay; boot times side by side",
    )
    demo.add_argument(
        "--all-chains", action="store_true",
        help="also boot a QEMU client for every firmware chain the lab file has none for "
             "(BIOS iPXE ROM, BIOS PXE with undionly.kpxe, UEFI PXE and HTTP boot with OVMF, "
             "HTTP boot over IPv6 on a subnet without IPv4 chains, if there is one): a timing "
             "table",
    )
    demo.add_argument(
        "--parallel", type=int, metavar="N", default=len(os.sched_getaffinity(0)),
        help="boot N clients at a time (default: one per core, here %(default)s): each QEMU "
             "machine keeps a core busy; 1 boots one after the other, for timings undisturbed "
             "by each other",
    )
    scenario = sub.add_parser(
        "scenario", help="replay a field report: up, run it, print the outcome, down"
    )
    scenario.add_argument("name", choices=sorted(SCENARIOS))
    args = parser.parse_args(argv)
    if getattr(args, "parallel", 1) < 1:
        parser.error("--parallel: at least 1")
    try:
        spec = load_lab(args.config or default_lab_file())
    except ConfigError as error:
        print(error.prefixed("boothop-lab"), file=sys.stderr)
        return EXIT_CONFIG
    if args.relay:
        spec = spec.with_relay(args.relay)
    if args.command == "down":
        Lab(spec).down()
        return 0
    if args.command == "status":
        print(json.dumps(Lab(spec).status(), indent=2))
        return 0
    problems = missing_requirements(
        spec.with_relay("dhcrelay") if getattr(args, "compare", False) else spec
    )
    image = getattr(args, "containers", None)
    if image is not None and (problem := image_problem(image)) is not None:
        problems.append(problem)
    if problems:
        print("boothop-lab cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return EXIT_FAILURE
    try:
        return _run(args, spec)
    except TopologyError as error:  # e.g. a namespace of its name that the lab did not make
        print(f"boothop-lab: {error}", file=sys.stderr)
        return EXIT_FAILURE


def _run(args: argparse.Namespace, spec: LabSpec) -> int:
    if args.command == "up":
        Lab(spec, image=args.containers).up()
        print(f"lab {spec.prefix!r} is up; `boothop-lab status`, `boothop-lab down`")
        return 0
    if args.command == "scenario":
        return 0 if run_scenario(args.name, spec).ok else 1
    relays = ("boothop", "dhcrelay") if args.compare else (spec.relay,)
    if args.all_chains:
        spec = spec.with_all_chains()
    run_dir = args.run_dir or new_run_dir(spec.prefix)
    all_ok = True
    by_relay: dict[str, list[ClientResult]] = {}
    for relay in relays:
        kept = run_dir / relay if args.compare else run_dir
        results, report = run_demo(spec.with_relay(relay), kept, args.containers, args.parallel)
        print(report, flush=True)
        print()
        all_ok &= all(r.ok for r in results)
        by_relay[relay] = results
    if args.compare:
        print("Boot times by relay (seconds from power-on, or from client start, to success; "
              "for QEMU clients also to DHCP, boot file and kernel):")
        print("\n".join(comparison_table(by_relay)))
        print()
    if args.parallel > 1:
        print(f"(Clients booted {args.parallel} at a time: each QEMU machine's seconds include "
              "waiting for a shared core; --parallel 1 for undisturbed timings.)")
    print(f"Run directory: {run_dir.resolve()}")
    return 0 if all_ok else 1

