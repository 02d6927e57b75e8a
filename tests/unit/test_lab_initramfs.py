"""The lab's initramfs: a cpio archive the kernel can unpack (Debian's cpio is the oracle), the
NIC modules in dependency order, an /init busybox can parse, cached by content."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from boothop.relay.lab import initramfs
from boothop.relay.lab.initramfs import DIRECTORY, FILE, SYMLINK, InitramfsError, newc

needs_cpio = pytest.mark.skipif(shutil.which("cpio") is None, reason="Debian package cpio")


@needs_cpio
def test_newc_archive_unpacks_with_debians_cpio_to_the_same_tree(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5 + b"odd"  # a length that needs padding
    archive = newc([
        ("bin", DIRECTORY, b""),
        ("bin/tool", FILE, data),
        ("bin/sh", SYMLINK, b"tool"),
        ("etc", DIRECTORY, b""),
        ("etc/empty", 0o100644, b""),
    ])
    unpacked = tmp_path / "root"
    unpacked.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=archive, cwd=unpacked, check=True)
    assert (unpacked / "bin" / "tool").read_bytes() == data
    assert (unpacked / "bin" / "tool").stat().st_mode & 0o777 == 0o755
    assert (unpacked / "bin" / "sh").readlink() == Path("tool")
    assert (unpacked / "etc" / "empty").read_bytes() == b""
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=archive, capture_output=True,
                             check=True).stdout.decode().split()
    assert listing == ["bin", "bin/tool", "bin/sh", "etc", "etc/empty"]


def _modules(tmp_path: Path, dep: str) -> str:
    version = "9.9.9-test"
    root = tmp_path / version
    root.mkdir()
    (root / "modules.dep").write_text(dep)
    return version


def test_modules_come_after_what_they_depend_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(initramfs, "MODULES_DIR", tmp_path)
    version = _modules(tmp_path, (
        "kernel/net/virtio_net.ko: kernel/net/net_failover.ko kernel/core/failover.ko "
        "kernel/virtio/virtio.ko kernel/virtio/virtio_ring.ko\n"
        "kernel/net/net_failover.ko: kernel/core/failover.ko\n"
        "kernel/core/failover.ko:\n"
        "kernel/virtio/virtio.ko: kernel/virtio/virtio_ring.ko\n"
        "kernel/virtio/virtio_ring.ko:\n"
        "kernel/virtio/virtio_pci.ko: kernel/virtio/virtio.ko kernel/virtio/virtio_ring.ko\n"
    ))
    order = initramfs.module_order(version, ["virtio_pci", "virtio_net"])
    assert sorted(order) == sorted(set(order))  # each once
    position = {Path(p).name: i for i, p in enumerate(order)}
    assert position["virtio_ring.ko"] < position["virtio.ko"] < position["virtio_pci.ko"]
    assert position["failover.ko"] < position["net_failover.ko"] < position["virtio_net.ko"]
    assert position["virtio.ko"] < position["virtio_net.ko"]
    with pytest.raises(InitramfsError, match="no module e1000"):
        initramfs.module_order(version, ["e1000"])


@pytest.mark.parametrize("script", [initramfs.INIT, initramfs.UDHCPC_SCRIPT,
                                    initramfs.DHCPCD_SCRIPT])
def test_the_scripts_parse_in_busyboxs_shell(script: str, tmp_path: Path) -> None:
    if not initramfs.BUSYBOX.is_file():
        pytest.skip("busybox-static not installed")
    path = tmp_path / "script"
    path.write_text(script)
    checked = subprocess.run([str(initramfs.BUSYBOX), "sh", "-n", str(path)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_archive_is_cached_by_its_contents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    modules.mkdir()
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF not really")
    monkeypatch.setattr(initramfs, "BOOT_DIR", boot)
    monkeypatch.setattr(initramfs, "MODULES_DIR", modules)
    monkeypatch.setattr(initramfs, "BUSYBOX", busybox)
    monkeypatch.setattr(initramfs, "NIC_MODULES", ("nic",))
    with pytest.raises(InitramfsError, match="linux-image-amd64"):
        initramfs.build(tmp_path / "cache")
    (boot / "vmlinuz-1.2.3").write_bytes(b"kernel")
    (modules / "1.2.3").mkdir()
    (modules / "1.2.3" / "modules.dep").write_text("nic.ko:\n")
    (modules / "1.2.3" / "nic.ko").write_bytes(b"module")
    kernel, first = initramfs.build(tmp_path / "cache")
    assert kernel == boot / "vmlinuz-1.2.3"
    stamp = first.stat().st_mtime_ns
    assert initramfs.build(tmp_path / "cache")[1] == first
    assert first.stat().st_mtime_ns == stamp  # not rebuilt
    busybox.write_bytes(b"\x7fELF another build")
    second = initramfs.build(tmp_path / "cache")[1]
    assert second != first and second.exists()


def test_the_dhcpv6_archive_holds_dhcpcd_and_every_library_it_links_to() -> None:
    """busybox-static has no DHCPv6 client: the IPv6 chain's kernel gets Debian's dhcpcd."""
    if not initramfs.DHCPCD.is_file():
        pytest.skip("dhcpcd-base not installed")
    names = {name: mode for name, mode, _ in initramfs.dhcp6_contents()}
    needed = subprocess.run(["ldd", str(initramfs.DHCPCD)], capture_output=True, text=True,
                            check=True).stdout
    libraries = [word.lstrip("/") for word in needed.split() if word.startswith("/")]
    assert libraries and all(names[library] == initramfs.FILE for library in libraries)
    assert names["bin/dhcpcd"] == initramfs.FILE and "etc/passwd" in names
    # Each file's directory comes before it.
    order = [name for name, _, _ in initramfs.dhcp6_contents()]
    assert all(order.index(str(Path(n).parent)) < order.index(n) for n in order
               if str(Path(n).parent) != ".")
