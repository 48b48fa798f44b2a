"""Every test runs twice: on an engine embedded in this process, and against a `kairos serve`
process on loopback (the binary the workspace builds; KAIROS_BIN names another)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest

import kairos

ROOT = pathlib.Path(__file__).resolve().parents[2]


def kairos_binary() -> str:
    """The `kairos` binary: $KAIROS_BIN, else the workspace's debug build."""
    if binary := os.environ.get("KAIROS_BIN"):
        return binary
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    built = target / "debug" / "kairos"
    if built.exists():
        return str(built)
    on_path = shutil.which("kairos")
    if on_path is None:
        pytest.fail("no kairos binary: build it (cargo build -p kairos) or set KAIROS_BIN")
    return on_path


def server_env() -> dict[str, str]:
    """This process's environment, less a configuration file the server would read."""
    env = {k: v for k, v in os.environ.items() if k != "KAIROS_CONFIG"}
    return env | {"RUST_LOG": "warn"}


class Server:
    """A `kairos serve` on its own data dir and a free loopback port, stopped at the end."""

    def __init__(self, data_dir: pathlib.Path, *extra: str) -> None:
        self.process = subprocess.Popen(
            [
                kairos_binary(),
                "serve",
                "--data-dir",
                str(data_dir),
                "--listen",
                "127.0.0.1:0",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=data_dir,
            env=server_env(),
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("kairos listening on "):
                self.url = line.removeprefix("kairos listening on ").strip()
                break
        else:
            code = self.process.wait()
            pytest.fail(f"kairos serve ended ({code}) before it listened")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(params=["embedded", "remote"])
def fs(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[kairos.Client]:
    """A client of a fresh platform, on each backend in turn."""
    data_dir = tmp_path / "kairos-data"
    data_dir.mkdir()
    if request.param == "embedded":
        client = kairos.connect(data_dir)
        yield client
        client.close()
    else:
        server = Server(data_dir)
        client = kairos.connect(server.url)
        try:
            yield client
        finally:
            client.close()
            server.stop()
