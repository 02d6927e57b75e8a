"""The Linux the lab's network-booted clients run: Debian's kernel and an initramfs built here.

The initramfs holds busybox-static, the kernel modules of the virtio NIC (Debian builds
virtio_net and virtio_pci as modules; their dependencies come from the kernel's modules.dep) and an
``/init`` that mounts /proc and /sys, loads the modules, gets an address by DHCP (busybox udhcpc,
through the relay), writes a report by TFTP to the PXE host's upload directory and powers off.
The report, not a console line, is the proof that the kernel booted.

A client of an IPv6 chain gets a second archive (``build_dhcp6``): busybox has no DHCPv6 client
in Debian (no udhcpc6 in busybox-static), so it holds Debian's dhcpcd and the C library it links
to. Its ``/init`` (the same file) then leases an address by DHCPv6 through the relay and reports
by an HTTP request to the PXE host's IPv6 address (its TFTP server is IPv4 only).

The archive is built in Python (cpio "newc", gzip with no timestamp), so the same inputs give the
same bytes; it is cached under the lab's state directory by a hash of its contents. Debian's
``cpio`` would need the tree staged on disk with owners and modes set, for no gain.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
BOOT_DIR = Path("/boot")
MODULES_DIR = Path("/lib/modules")
#: The NIC drivers the lab's QEMU machines need (virtio-net-pci), by module name.
NIC_MODULES = ("virtio_pci", "virtio_net")
#: Kernel command line: the serial console, no per-line output, reboot (QEMU exits: -no-reboot)
#: on panic; then what spares time under TCG: no speculation mitigations and no KASLR (both cost
#: emulated instructions), no delay-loop calibration or timer check, no read-only remapping of
#: the kernel's data (and its W+X page walk) and no crypto self-tests at boot (together about a
#: tenth of the emulated CPU time from power-on to the initramfs's poweroff).
KERNEL_ARGS = (
    "console=ttyS0 quiet panic=-1 mitigations=off nokaslr no_timer_check lpj=4000000 "
    "tsc=reliable random.trust_cpu=on rodata=off cryptomgr.notests"
)
#: Where a client's report lands in the PXE host's TFTP upload directory.
REPORT_PREFIX = "report-"

INIT = """\
#!/bin/sh
# boothop lab: bring the NIC up, get an address by DHCP, report it to the PXE host, power off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for module in $(cat /modules.order); do insmod "/modules/$module"; done
arg() { sed -n "s/.*$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
chain=$(arg boothop.chain)
server=$(arg boothop.server)
ip link set lo up
ip link set eth0 up
mac=$(cat /sys/class/net/eth0/address)
name="@REPORT_PREFIX@$(echo "$mac" | tr : -)"
case "$server" in *:*)
    # IPv6: an address by DHCPv6 (dhcpcd, from the second archive), a report by HTTP.
    echo "boothop initramfs: DHCPv6 on eth0 ($mac)"
    mkdir -p /run /var/lib/dhcpcd
    dhcpcd -6 -B -1 -t 60 -f /dhcpcd.conf -c /dhcpcd.script eth0 || {
        echo "no lease"; poweroff -f; }
    . /tmp/lease
    report="chain=$chain/mac=$mac/address=$ip/router=$router/dhcp_server=$serverid"
    report="$report/kernel=$(uname -r)/uptime=$(cut -d' ' -f1 /proc/uptime)"
    echo "boothop initramfs: reporting to $server as $name"
    for attempt in 1 2 3; do
        # The PXE host answers 404 (there is no such file): the request is the report.
        wget -q -O /dev/null "http://[$server]/$name/$report" 2>/tmp/wget && break
        grep -q " 404 " /tmp/wget && break
        sleep 1
    done
    poweroff -f
esac
echo "boothop initramfs: DHCP on eth0 ($mac)"
udhcpc -i eth0 -n -q -f -t 10 -T 2 -A 1 -s /udhcpc.script || { echo "no lease"; poweroff -f; }
. /tmp/lease
{
    echo "chain=$chain"
    echo "mac=$mac"
    echo "address=$ip"
    echo "router=$router"
    echo "dhcp_server=$serverid"
    echo "kernel=$(uname -r)"
    echo "uptime=$(cut -d' ' -f1 /proc/uptime)"
} > /tmp/report
echo "boothop initramfs: reporting to $server as $name"
for attempt in 1 2 3; do
    tftp -p -l /tmp/report -r "$name" "$server" && break
    sleep 1
done
poweroff -f
""".replace("@REPORT_PREFIX@", REPORT_PREFIX)

UDHCPC_SCRIPT = """\
#!/bin/sh
# udhcpc calls this with bound/renew: configure the address and the default route, keep the lease.
case "$1" in
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}"
    printf 'ip=%s\\nrouter=%s\\nserverid=%s\\n' "$ip" "${router%% *}" "$serverid" > /tmp/lease
    ;;
esac
exit 0
"""


DHCPCD = Path("/usr/sbin/dhcpcd")
#: dhcpcd for one IPv6 address by DHCPv6 (IA_NA) when the router advertises M, and the router
#: from that advertisement; nothing else (no DNS, no IPv4, no hooks but ours).
DHCPCD_CONF = """\
ipv6only
ipv6rs
ia_na 1
persistent
"""
#: dhcpcd runs it on each event: on a DHCPv6 binding it keeps the lease for /init.
DHCPCD_SCRIPT = """\
#!/bin/sh
case "$reason" in
BOUND6|REBIND6|RENEW6|REBOOT6)
    router=$(ip -6 route show default | sed -n 's/.*via \\([^ ]*\\).*/\\1/p' | head -n 1)
    printf 'ip=%s\\nrouter=%s\\nserverid=%s\\n' "$new_dhcp6_ia_na1_ia_addr1" "$router" \\
        "$new_dhcp6_server_id" > /tmp/lease
    ;;
esac
exit 0
"""


class InitramfsError(RuntimeError):
    """What the initramfs is made of is missing (a Debian package is not installed)."""


def kernel() -> tuple[Path, str]:
    """Debian's newest kernel image and its version (linux-image-amd64) that has its modules."""
    found = []
    for image in BOOT_DIR.glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        if (MODULES_DIR / version / "modules.dep").is_file():
            found.append((_version_key(version), image, version))
    if not found:
        raise InitramfsError(
            f"no {BOOT_DIR}/vmlinuz-* with modules in {MODULES_DIR} "
            "(Debian package linux-image-amd64)"
        )
    _, image, version = max(found)
    return image, version


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


def module_order(version: str, names: Iterable[str]) -> list[str]:
    """The .ko paths (relative to the modules directory) to load for ``names``, each after
    the modules it depends on (modules.dep lists every module's dependencies)."""
    depends: dict[str, list[str]] = {}
    for line in (MODULES_DIR / version / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        depends[path] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in depends}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dependency in depends[path]:
            visit(dependency)
        order.append(path)

    for name in names:
        if name not in by_name:
            raise InitramfsError(f"kernel {version} has no module {name}")
        visit(by_name[name])
    return order


def newc(entries: Iterable[tuple[str, int, bytes]]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks: (name, mode, data) entries,
    owned by root, with the trailer. A symlink's data is its target."""
    out = bytearray()
    for inode, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % value for value in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data + b"\0" * (-len(data) % 4)
    return bytes(out)


DIRECTORY, FILE, SYMLINK = 0o040755, 0o100755, 0o120777


def contents(version: str) -> list[tuple[str, int, bytes]]:
    """What goes into the archive, in order."""
    if not BUSYBOX.is_file():
        raise InitramfsError(f"{BUSYBOX} missing (Debian package busybox-static)")
    modules = module_order(version, NIC_MODULES)
    root = MODULES_DIR / version
    entries = [(d, DIRECTORY, b"") for d in ("bin", "dev", "proc", "sys", "tmp", "modules")]
    entries += [
        ("bin/busybox", FILE, BUSYBOX.read_bytes()),
        ("bin/sh", SYMLINK, b"busybox"),
        ("init", FILE, INIT.encode()),
        ("udhcpc.script", FILE, UDHCPC_SCRIPT.encode()),
        ("modules.order", 0o100644, "".join(Path(m).name + "\n" for m in modules).encode()),
    ]
    entries += [(f"modules/{Path(m).name}", 0o100644, (root / m).read_bytes()) for m in modules]
    return entries


def dhcp6_contents() -> list[tuple[str, int, bytes]]:
    """The second archive of an IPv6 chain's client: dhcpcd, the shared libraries ``ldd``
    names for it (at the same paths), its configuration, our hook and a passwd with its
    privilege-separation user."""
    if not DHCPCD.is_file():
        raise InitramfsError(f"{DHCPCD} missing (Debian package dhcpcd-base)")
    listed = subprocess.run(["ldd", str(DHCPCD)], capture_output=True, text=True, check=True,
                            timeout=30).stdout
    libraries = sorted({Path(word) for word in listed.split() if word.startswith("/")})
    entries: list[tuple[str, int, bytes]] = []
    for directory in sorted({str(p.parent).lstrip("/") for p in libraries} | {"bin", "etc"}):
        parts = directory.split("/")
        entries += [("/".join(parts[:n]), DIRECTORY, b"") for n in range(1, len(parts) + 1)]
    entries = list(dict.fromkeys(entries))
    entries += [(str(library).lstrip("/"), FILE, library.read_bytes()) for library in libraries]
    entries += [
        ("bin/dhcpcd", FILE, DHCPCD.read_bytes()),
        ("dhcpcd.conf", 0o100644, DHCPCD_CONF.encode()),
        ("dhcpcd.script", FILE, DHCPCD_SCRIPT.encode()),
        ("etc/passwd", 0o100644, b"root:x:0:0:root:/:/bin/sh\ndhcpcd:x:100:65534::/:/bin/false\n"),
        ("etc/group", 0o100644, b"root:x:0:\nnogroup:x:65534:\n"),
    ]
    return entries


def build_dhcp6(cache_dir: Path) -> Path:
    """The second archive (built, or taken from the cache when its contents are unchanged)."""
    return _cached(cache_dir, "dhcp6", dhcp6_contents())


def build(cache_dir: Path) -> tuple[Path, Path]:
    """The kernel image and the initramfs (built, or taken from the cache when its contents
    are unchanged)."""
    image, version = kernel()
    return image, _cached(cache_dir, "initramfs", contents(version))


def _cached(cache_dir: Path, name: str, entries: list[tuple[str, int, bytes]]) -> Path:
    """The gzipped archive of ``entries`` in ``cache_dir``, named by a hash of its contents."""
    digest = hashlib.sha256()
    for entry, mode, data in entries:
        digest.update(b"%s\0%o\0%d\0" % (entry.encode(), mode, len(data)) + data)
    cached = cache_dir / f"{name}-{digest.hexdigest()[:16]}.cpio.gz"
    if not cached.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(cached.name + ".tmp")
        partial.write_bytes(gzip.compress(newc(entries), compresslevel=6, mtime=0))
        partial.replace(cached)
    return cached
