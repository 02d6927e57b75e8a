"""The Linux the lab's network-booted clients run: Debian's kernel and an initramfs built here.

The initramfs holds busybox-static, the kernel modules of the virtio NIC (Debian builds
virtio_net and virtio_pci as modules; their dependencies come from the kernel's modules.dep) and an
``/init`` that mounts /proc and /sys, loads the modules, gets an address by DHCP (busybox udhcpc,
through the relay), writes a report by TFTP to the PXE host's upload directory and powers off.
The report, not a console line, is the proof that the kernel booted.

The archive is built in Python (cpio "newc", gzip with no timestamp), so the same inputs give the
same bytes; it is cached under the lab's state directory by a hash of its contents. Debian's
``cpio`` would need the tree staged on disk with owners and modes set, for no gain.
"""

from __future__ import annotations

import gzip
import hashlib
import re
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
echo "boothop initramfs: DHCP on eth0 ($(cat /sys/class/net/eth0/address))"
udhcpc -i eth0 -n -q -f -t 10 -T 2 -A 1 -s /udhcpc.script || { echo "no lease"; poweroff -f; }
. /tmp/lease
{
    echo "chain=$chain"
    echo "mac=$(cat /sys/class/net/eth0/address)"
    echo "address=$ip"
    echo "router=$router"
    echo "dhcp_server=$serverid"
    echo "kernel=$(uname -r)"
    echo "uptime=$(cut -d' ' -f1 /proc/uptime)"
} > /tmp/report
name="@REPORT_PREFIX@$(cat /sys/class/net/eth0/address | tr : -)"
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


def build(cache_dir: Path) -> tuple[Path, Path]:
    """The kernel image and the initramfs (built, or taken from the cache when its contents
    are unchanged)."""
    image, version = kernel()
    entries = contents(version)
    digest = hashlib.sha256()
    for name, mode, data in entries:
        digest.update(b"%s\0%o\0%d\0" % (name.encode(), mode, len(data)) + data)
    cached = cache_dir / f"initramfs-{digest.hexdigest()[:16]}.cpio.gz"
    if not cached.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(cached.name + ".tmp")
        partial.write_bytes(gzip.compress(newc(entries), compresslevel=6, mtime=0))
        partial.replace(cached)
    return image, cached
