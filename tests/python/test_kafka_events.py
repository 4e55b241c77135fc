"""An outside check of the event stream: the official OpenAI SDK sends traffic, Python's
confluent-kafka (librdkafka, as a user's own alerting would use) reads `<prefix>.events`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import openai
import pytest
from confluent_kafka import Consumer

from conftest import _free_port, _Process


def _tansu() -> str:
    path = os.environ.get("TANSU_BIN") or shutil.which("tansu") or str(Path.home() / ".cargo/bin/tansu")
    if not Path(path).exists():
        if os.environ.get("SWITCHYARD_SKIP_KAFKA_TESTS") == "1":
            pytest.skip("tansu not installed")
        raise RuntimeError("tansu not found: scripts/test.sh installs it, or set TANSU_BIN")
    return path


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("tansu")
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = _Process(
        "tansu",
        [_tansu(), "broker", "--cluster-id", "pytest", "--listener-url", url,
         "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
        workdir / "tansu.log",
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "tansu did not start"
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    proc.stop()


def test_events_read_by_confluent_kafka(broker: str, switchyard_bin: Path, mock_upstream: str, tmp_path: Path):
    prefix = "py" + uuid.uuid4().hex[:8]
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock_upstream}", api_key: k}}
general_settings: {{master_key: sk-kafka}}
event_log:
  path: {tmp_path / "spool"}
  kafka: {{bootstrap_servers: "{broker}", topic_prefix: {prefix}}}
"""
    )
    port = _free_port()
    gateway = _Process("gateway", [str(switchyard_bin), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)], tmp_path / "gw.log")
    try:
        gateway.wait_ready(f"http://127.0.0.1:{port}/health/liveliness")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-kafka", max_retries=0)
        call_ids = []
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "one two"}])
            call_ids.append(raw.headers["x-litellm-call-id"])
            costs = float(raw.headers["x-litellm-response-cost"])

        consumer = Consumer({"bootstrap.servers": broker, "group.id": "py-" + uuid.uuid4().hex, "auto.offset.reset": "earliest"})
        consumer.subscribe([f"{prefix}.events"])
        events = []
        deadline = time.monotonic() + 60
        while len(events) < 6 and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            event = json.loads(msg.value())
            assert msg.key().decode() == event["request_id"]
            events.append(event)
        consumer.close()
    finally:
        gateway.stop()

    assert len(events) == 6, events
    for call_id in call_ids:
        mine = [e for e in events if e["request_id"] == call_id]
        assert [e["type"] for e in mine] == ["request", "response"]
        response = mine[1]
        assert response["status"] == "success"
        assert response["completion_tokens"] == 9
        assert response["prompt_tokens"] == 2
        assert response["cost"] == pytest.approx(costs, abs=1e-12)
        assert response["schema_version"] == 1
