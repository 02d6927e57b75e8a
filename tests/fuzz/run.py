"""Run one fuzz target under atheris: ``python tests/fuzz/run.py TARGET [libFuzzer args...]``.

boothop's modules are instrumented for coverage as they are imported. Seeds (the real captures)
are written to a directory appended to the corpus directories, so a bare ``-runs=N``
starts from them. libFuzzer's statistics (``cov:``, ``ft:``, ``exec/s``) go to stderr.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["boothop"]):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import targets


def main(argv: list[str]) -> None:
    target, *args = argv[1:]
    test_one_input = targets.TARGETS[target]
    # One directory per target, rewritten each run: libFuzzer ends the process with exit(), so
    # a temporary directory would never be removed.
    seed_dir = Path(tempfile.gettempdir()) / f"boothop-fuzz-seeds-{target}"
    targets.write_seeds(target, seed_dir)
    atheris.Setup([argv[0], *args, str(seed_dir)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
