"""Path safety: the one place that maps a requested filename to a file inside the root.

Refused: ``..`` components, anything whose real path (symlinks resolved) leaves the root, and
anything that is not a regular file (directories, device files, FIFOs, sockets). A leading ``/``
means the root, as with tftpd-hpa's ``-s``; Windows-style ``\\`` separators are accepted because
PXE loaders from Windows Deployment Services send them.

Uploads (``create_file``) follow the same rules under the write root, and are never created in a
directory outside it nor through a symlink: the data goes to a temporary file in the target's
directory, renamed into place only when the transfer completes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable

from .config import BLKSIZE_MAX
from .packet import ErrorCode
from .sink import SinkError


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


class FileReader:
    """A regular file read in order (``read``), or from where ``seek`` puts it by a reader of its
    descriptor that does not move it (the C lock-step loop, native.py)."""

    def __init__(self, fd: int, size: int) -> None:
        # A buffer of the largest block: smaller blocks are copied out of it, one read system
        # call per 64 KiB (with the default 8 KiB, each 8 KiB block took its own read, straight
        # into its bytes: 1,000 more instructions a block, callgrind), and a block of the
        # largest size is read straight into its own bytes (a 64 KiB buffer copied it twice).
        self._file = os.fdopen(fd, "rb", buffering=BLKSIZE_MAX)
        self.size: int | None = size
        #: The buffered file's own read: no wrapper frame per block.
        self.read: Callable[[int], bytes] = self._file.read

    def fileno(self) -> int:
        return self._file.fileno()

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int) -> None:
        self._file.seek(offset)

    def close(self) -> None:
        self._file.close()


def open_file(root: str, filename: str) -> FileReader:
    """Open a regular file under ``root`` for reading; FileRefused with the TFTP error code."""
    fd, info = open_regular(root, filename)
    return FileReader(fd, info.st_size)


def open_regular(root: str, filename: str) -> tuple[int, os.stat_result]:
    """A read-only descriptor of the regular file ``filename`` under ``root``, and its status:
    the confinement the TFTP and HTTP servers share. FileRefused with the TFTP error code."""
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
    return fd, info


#: Failures of a write that mean "no room": TFTP error 3, "Disk full or allocation exceeded".
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _sink_error(exc: OSError) -> SinkError:
    if exc.errno in _NO_ROOM:
        return SinkError(ErrorCode.DISK_FULL, "disk full or allocation exceeded")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EISDIR, errno.EROFS):
        return SinkError(ErrorCode.ACCESS_VIOLATION, exc.strerror or "access violation")
    return SinkError(ErrorCode.NOT_DEFINED, exc.strerror or "write failed")


class _FileWriter:
    """A temporary file beside the target, renamed into place by ``commit``."""

    def __init__(self, dir_fd: int, name: str, temp: str, fd: int, overwrite: bool) -> None:
        self._dir_fd = dir_fd
        self._name = name
        self._temp = temp
        self._file = os.fdopen(fd, "wb", buffering=1 << 16)
        self._overwrite = overwrite
        self._open = True

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise _sink_error(exc) from None

    def commit(self) -> None:
        try:
            self._file.close()
            if self._overwrite:
                # rename(2) replaces the name itself: a symlink planted there meanwhile is not
                # followed.
                os.replace(self._temp, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            else:
                # link(2) fails with EEXIST where rename would silently replace a file that
                # appeared during the upload (another client's, for instance).
                os.link(self._temp, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd,
                        follow_symlinks=False)
                os.unlink(self._temp, dir_fd=self._dir_fd)
        except FileExistsError:
            self.abort()
            raise SinkError(ErrorCode.FILE_EXISTS, "file already exists") from None
        except OSError as exc:
            self.abort()
            raise _sink_error(exc) from None
        self._open = False
        os.close(self._dir_fd)

    def abort(self) -> None:
        if not self._open:
            return
        self._open = False
        with contextlib.suppress(OSError):  # a failed flush of data we are discarding anyway
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp, dir_fd=self._dir_fd)
        os.close(self._dir_fd)


def create_file(root: str, filename: str, *, overwrite: bool = False) -> _FileWriter:
    """Start an upload of ``filename`` under ``root``; FileRefused with the TFTP error code.

    The target's directory must exist (none is created) and be inside ``root``; an existing
    target must be a regular file, and is refused (error 6) unless ``overwrite``.
    """
    real = resolve(root, filename)
    real_root = os.path.realpath(root)
    if real == real_root:
        raise FileRefused(ErrorCode.ACCESS_VIOLATION, "not a regular file")
    parent, name = os.path.split(real)
    try:
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise FileRefused(ErrorCode.FILE_NOT_FOUND, "directory not found") from None
    except OSError as exc:
        raise FileRefused(ErrorCode.ACCESS_VIOLATION, exc.strerror or "cannot open") from None
    try:
        return _start_upload(dir_fd, real_root, name, overwrite)
    except BaseException:
        os.close(dir_fd)
        raise


def _start_upload(dir_fd: int, real_root: str, name: str, overwrite: bool) -> _FileWriter:
    # The directory actually opened, whatever was swapped in since resolve(): still inside?
    opened = os.readlink(f"/proc/self/fd/{dir_fd}")
    if os.path.commonpath([real_root, opened]) != real_root:
        raise FileRefused(ErrorCode.ACCESS_VIOLATION, "path leads outside the root")
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(ErrorCode.ACCESS_VIOLATION, "not a regular file")
        if not overwrite:
            raise FileRefused(ErrorCode.FILE_EXISTS, "file already exists")
    temp = f".tftp-{secrets.token_hex(8)}.part"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, 0o644, dir_fd=dir_fd)
    except OSError as exc:
        raise FileRefused(ErrorCode.ACCESS_VIOLATION, exc.strerror or "cannot create") from None
    return _FileWriter(dir_fd, name, temp, fd, overwrite)
