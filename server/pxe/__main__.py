"""``python -m server.pxe -c FILE``: run the [pxe] and [tftp] services of a configuration file.

A stop-gap runner for a PXE+TFTP host; ``boothop-server run -c FILE`` is the real entry point.
"""

from __future__ import annotations

import argparse
import sys
import tomllib

import trio

from server.errors import ConfigError
from server.tftp.config import parse_tftp
from server.tftp.service import serve_tftp

from .config import parse_pxe
from .service import serve_proxydhcp


async def _run(document: dict, path: str) -> None:
    pxe = parse_pxe(document["pxe"], path) if "pxe" in document else None
    tftp = parse_tftp(document["tftp"], path) if "tftp" in document else None
    async with trio.open_nursery() as nursery:
        if pxe is not None:
            await nursery.start(serve_proxydhcp, pxe)
        if tftp is not None:
            await nursery.start(serve_tftp, tftp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.pxe", description=__doc__)
    parser.add_argument("-c", "--config", required=True)
    args = parser.parse_args(argv)
    try:
        with open(args.config, "rb") as f:
            document = tomllib.load(f)
        trio.run(_run, document, args.config)
    except (OSError, tomllib.TOMLDecodeError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
