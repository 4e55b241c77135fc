"""Fixtures for driving Switchyard with the official OpenAI Python SDK.

Session-scoped: one mock upstream (`switchyard mock-upstream`) and one gateway
(`switchyard --config ...`), each a real process on a free loopback port, stopped at the end.

The binary is `$SWITCHYARD_BIN`, or `<repo>/target/debug/switchyard` (build it with
`cargo build` first).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MASTER_KEY = "sk-test-1234"
STARTUP_TIMEOUT_S = 30.0

# Everything here talks to loopback only: never send it through a proxy from the environment.
for _var in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_var, "").split(",") if h]
    for _h in ("127.0.0.1", "localhost"):
        if _h not in _hosts:
            _hosts.append(_h)
    os.environ[_var] = ",".join(_hosts)

# A direct opener (no proxies) for the readiness probes.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _binary() -> Path:
    configured = os.environ.get("SWITCHYARD_BIN")
    path = Path(configured) if configured else REPO_ROOT / "target" / "debug" / "switchyard"
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.exit(
            f"switchyard binary not found at {path}: run `cargo build` from {REPO_ROOT} "
            "or set SWITCHYARD_BIN to the binary's path",
            returncode=2,
        )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Process:
    """A child process with its output in a log file."""

    def __init__(self, name: str, args: list[str], log: Path):
        self.name = name
        self.log = log
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )

    def wait_ready(self, url: str, expect_status: int = 200) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode} before it was ready; "
                    f"log {self.log}:\n{_tail(self.log)}"
                )
            try:
                with _DIRECT.open(url, timeout=2) as resp:
                    if resp.status == expect_status:
                        return
                    last_error = f"status {resp.status}"
            except urllib.error.HTTPError as e:
                last_error = f"status {e.code}"
            except (urllib.error.URLError, OSError) as e:
                last_error = str(e)
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"{self.name} not ready at {url} after {STARTUP_TIMEOUT_S}s ({last_error}); "
            f"log {self.log}:\n{_tail(self.log)}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_file.close()


@pytest.fixture(scope="session")
def switchyard_bin() -> Path:
    return _binary()


@pytest.fixture(scope="session")
def mock_upstream(switchyard_bin: Path, tmp_path_factory: pytest.TempPathFactory):
    """The mock OpenAI upstream; yields its api_base (`http://127.0.0.1:P/v1`)."""
    workdir = tmp_path_factory.mktemp("mock-upstream")
    port = _free_port()
    proc = _Process(
        "mock upstream",
        [str(switchyard_bin), "mock-upstream", "--host", "127.0.0.1", "--port", str(port)],
        workdir / "mock-upstream.log",
    )
    try:
        proc.wait_ready(f"http://127.0.0.1:{port}/v1/models")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.stop()


def _config(api_base: str, events: Path) -> str:
    return f"""\
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{api_base}", api_key: upstream-key}}
  - model_name: text-embedding-3-small
    litellm_params: {{model: openai/text-embedding-3-small, api_base: "{api_base}", api_key: upstream-key}}
    model_info: {{mode: embedding}}
  - model_name: always-429
    litellm_params: {{model: openai/error-429, api_base: "{api_base}", api_key: k}}
router_settings: {{num_retries: 0}}
general_settings: {{master_key: {MASTER_KEY}}}
event_log: {{path: "{events}"}}
"""


@pytest.fixture(scope="session")
def gateway(switchyard_bin: Path, mock_upstream: str, tmp_path_factory: pytest.TempPathFactory):
    """The gateway in front of the mock upstream; yields its root URL (`http://127.0.0.1:Q`)."""
    workdir = tmp_path_factory.mktemp("gateway")
    config = workdir / "config.yaml"
    config.write_text(_config(mock_upstream, workdir / "events"))
    port = _free_port()
    proc = _Process(
        "gateway",
        [
            str(switchyard_bin),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        workdir / "gateway.log",
    )
    try:
        proc.wait_ready(f"http://127.0.0.1:{port}/health/liveliness")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def client(gateway: str) -> openai.OpenAI:
    """The OpenAI SDK pointed at the gateway with the master key, no client-side retries."""
    c = openai.OpenAI(base_url=f"{gateway}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)
    yield c
    c.close()


@pytest.fixture(scope="session")
def make_client(gateway: str):
    """Builds extra SDK clients against the gateway (e.g. with another api key)."""
    made: list[openai.OpenAI] = []

    def make(**kwargs) -> openai.OpenAI:
        kwargs.setdefault("base_url", f"{gateway}/v1")
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 30)
        c = openai.OpenAI(**kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
