"""The LD_PRELOAD library the DORA benches start perfdhcp with: its ``bind`` adjusted, nothing else.

- ``queue``: every UDP socket perfdhcp binds gets a receive queue of that many bytes
  (SO_RCVBUFFORCE: root). Its thousands of clients share one socket, where each real client has
  its own: a server that sends its ACKs as a group after each synced commit overflows the default
  208 KiB at rates a relay's 4 MiB socket (boothop-relay's) takes. The server or relay being
  measured, not the generator's socket, should end a ladder. 0: perfdhcp's own default.
- ``any_port``: a socket bound to that port is bound to INADDR_ANY with SO_BROADCAST instead.
  perfdhcp binds to the interface's address, which cannot receive replies broadcast to
  255.255.255.255:68 (its clients behind a relay). 0: bound as perfdhcp asks.

Built with ``cc`` into the caller's directory; a C source in a string, as the benches' other
helpers, because perfdhcp is a C++ program whose sockets only an LD_PRELOAD reaches.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

#: The benches' default ``queue``.
GENERATOR_QUEUE = 4 * 1024 * 1024

_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    int type = 0, queue = QUEUE;
    socklen_t size = sizeof type;
    if (queue && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) == 0 && type == SOCK_DGRAM)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &queue, sizeof queue);
    if (ANY_PORT && addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if (ntohs(a.sin_port) == ANY_PORT) {
            int one = 1;
            setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
            a.sin_addr.s_addr = htonl(INADDR_ANY);
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real(fd, addr, len);
}
"""


def build(directory: Path, *, queue: int = GENERATOR_QUEUE, any_port: int = 0) -> Path:
    """The library, compiled into ``directory``: its path, for LD_PRELOAD."""
    source, library = directory / "perfdhcp_shim.c", directory / "perfdhcp_shim.so"
    source.write_text(_SOURCE)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", f"-DQUEUE={queue}",
                    f"-DANY_PORT={any_port}", "-o", str(library), str(source), "-ldl"],
                   check=True, timeout=60)
    return library
