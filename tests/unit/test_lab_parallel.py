"""``boothop-lab demo --parallel N``: the lab boots N clients at a time and reports them in the
lab file's order."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from boothop.relay.lab.cli import main
from boothop.relay.lab.lab import Lab
from boothop.relay.lab.locations import default_lab_file
from boothop.relay.lab.results import ClientResult
from boothop.relay.lab.spec import ClientSpec, load_lab


@pytest.mark.parametrize("parallel", [1, 2, 3])
def test_boot_clients_boots_n_at_a_time_in_the_lab_files_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel: int
) -> None:
    spec = load_lab(default_lab_file()).with_all_chains()
    lab = Lab(spec, workdir=tmp_path)
    lock = threading.Lock()
    running, most = 0, 0

    def boot(client: ClientSpec) -> ClientResult:
        """Each boot takes a while, the first ones longest (they finish out of order)."""
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02 * (len(spec.clients) - spec.clients.index(client)))
        with lock:
            running -= 1
        return ClientResult(client.name, client.kind, client.subnet, client.mac, ok=True)

    monkeypatch.setattr(lab, "boot", boot)
    results = lab.boot_clients(parallel)
    assert [r.name for r in results] == [c.name for c in spec.clients]
    assert most == parallel


def test_parallel_below_one_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--parallel", "0"])
    assert exited.value.code == 2
    assert "--parallel: at least 1" in capsys.readouterr().err
