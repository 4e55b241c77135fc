"""Spend in ClickHouse, queried as an outside client would: calls made with the OpenAI SDK
through a gateway writing to a real ClickHouse server (Debian's 18.16, started by
scripts/clickhouse.sh), read back with clickhouse-connect. Every call's cost header equals its
`spend_logs` row and the rollups, to the nano-dollar."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import clickhouse_connect
import pytest

from conftest import MASTER_KEY, REPO_ROOT, _Process, _free_port

MESSAGES = [{"role": "user", "content": "Say hello to the gateway"}]


@pytest.fixture(scope="module")
def clickhouse_server():
    if shutil.which("clickhouse-server") is None and not Path("/usr/sbin/clickhouse-server").exists():
        pytest.skip("clickhouse-server is not installed (scripts/test.sh installs it)")
    # Under /tmp: every parent directory must be readable by the clickhouse user.
    workdir = Path(f"/tmp/switchyard-py-clickhouse-{uuid.uuid4().hex[:8]}")
    workdir.mkdir()
    port, tcp = _free_port(), _free_port()
    proc = _Process(
        "clickhouse",
        ["bash", str(REPO_ROOT / "scripts" / "clickhouse.sh"), str(workdir), str(port), str(tcp)],
        workdir.with_suffix(".log"),
    )
    try:
        proc.wait_ready(f"http://127.0.0.1:{port}/?query=SELECT%201")
        yield f"http://127.0.0.1:{port}"
    finally:
        # SIGTERM to the script's process (runuser, which passes it on) stops the server.
        proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.with_suffix(".log").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def spend_gateway(switchyard_bin: Path, mock_upstream: str, clickhouse_server: str, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("spend-gateway")
    config = workdir / "config.yaml"
    config.write_text(
        f"""\
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock_upstream}", api_key: upstream-key}}
general_settings: {{master_key: {MASTER_KEY}}}
event_log: {{path: "{workdir / 'events'}"}}
analytics: {{clickhouse: {{url: "{clickhouse_server}", database: spend_py}}}}
"""
    )
    subprocess.run([str(switchyard_bin), "migrate", "--config", str(config)], check=True, cwd=REPO_ROOT)
    port = _free_port()
    proc = _Process(
        "spend gateway",
        [str(switchyard_bin), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        workdir / "gateway.log",
    )
    try:
        proc.wait_ready(f"http://127.0.0.1:{port}/health/readiness")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def test_spend_rows_equal_the_cost_headers(spend_gateway: str, clickhouse_server: str, make_client):
    client = make_client(base_url=f"{spend_gateway}/v1", api_key=MASTER_KEY)
    costs = []
    for _ in range(10):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, metadata={"tags": ["py"]}
        )
        costs.append(raw.headers["x-litellm-response-cost"])
        raw.parse()
    expected = sum(round(float(c) * 1e9) for c in costs)

    port = int(clickhouse_server.rsplit(":", 1)[1])
    ch = clickhouse_connect.get_client(host="127.0.0.1", port=port, database="spend_py")
    rows = spend = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows, spend = ch.query("SELECT count(), sum(spend_nanos) FROM spend_logs FINAL").result_rows[0]
        if rows >= 10:
            break
        time.sleep(0.2)
    assert (rows, spend) == (10, expected)
    # The rollups go in just after the spend rows: wait for them too.
    tagged = (0, 0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tagged = tuple(
            ch.query(
                "SELECT sum(requests), sum(spend_nanos) FROM daily_spend FINAL "
                "WHERE entity_kind = 'tag' AND entity = 'py'"
            ).result_rows[0]
        )
        if tagged[0] >= 10:
            break
        time.sleep(0.2)
    assert tagged == (10, expected)
    model = ch.query(
        "SELECT model_group, sum(total_tokens) FROM spend_logs FINAL GROUP BY model_group"
    ).result_rows
    assert model[0][0] == "gpt-4o-mini" and model[0][1] > 0
