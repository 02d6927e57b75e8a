"""Path safety: the one place that maps a requested filename to a file inside the root.

Refused: ``..`` components, anything whose real path (symlinks resolved) leaves the root, and
anything that is not a regular file (directories, device files, FIFOs, sockets). A leading ``/``
means the root, as with tftpd-hpa's ``-s``; Windows-style ``\\`` separators are accepted because
PXE loaders from Windows Deployment Services send them.
"""

from __future__ import annotations

import os
import stat

from .packet import ErrorCode


class FileRefused(Exception):
    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def resolve(root: str, filename: str) -> str:
    """The real path of ``filename`` under ``root``, or FileRefused. Does not open the file."""
    parts = [p for p in filename.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts:
        raise FileRefused(ErrorCode.FILE_NOT_FOUND, "empty filename")
    if ".." in parts:
        raise FileRefused(ErrorCode.ACCESS_VIOLATION, "'..' in filename")
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, *parts))
    if os.path.commonpath([real_root, real]) != real_root:
        raise FileRefused(ErrorCode.ACCESS_VIOLATION, "path leads outside the root")
    return real


class _FileReader:
    def __init__(self, fd: int, size: int) -> None:
        self._file = os.fdopen(fd, "rb", buffering=1 << 16)
        self.size: int | None = size

    def read(self, count: int) -> bytes:
        return self._file.read(count)

    def close(self) -> None:
        self._file.close()


def open_file(root: str, filename: str) -> _FileReader:
    """Open a regular file under ``root`` for reading; FileRefused with the TFTP error code."""
    real = resolve(root, filename)
    try:
        # O_NOFOLLOW: the last component cannot have become a symlink since resolve();
        # O_NONBLOCK: opening a FIFO must not block the server.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileRefused(ErrorCode.FILE_NOT_FOUND, "file not found") from None
    except OSError as exc:
        raise FileRefused(ErrorCode.ACCESS_VIOLATION, exc.strerror or "cannot open") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise FileRefused(ErrorCode.ACCESS_VIOLATION, "not a regular file")
    os.set_blocking(fd, True)
    return _FileReader(fd, info.st_size)
