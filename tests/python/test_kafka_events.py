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


def _readme_line(event: dict) -> str | None:
    """What the README's confluent-kafka example prints for a record (its branches, verbatim)."""
    if event.get("type") == "response" and event["status"] == "failure":
        return (f"{event['model_group']} {event['http_status']} {event['error_type']}: "
                f"{event['error_message']} (key {event['key_alias'] or event['api_key_hash']})")
    elif event.get("type") == "budget_alert":
        return f"{event['event']}: {event['account']} spent {event['spend']:.2f} of {event['budget']:.2f} USD"
    elif event.get("type") == "alert":
        return f"[{event['level']}] {event['alert_type']} {event['entity']}: {event['message']}"
    return None


def test_alerts_read_by_confluent_kafka(broker: str, switchyard_bin: Path, mock_upstream: str, tmp_path: Path):
    """`switchyard consume alerts` next to a gateway on Kafka: a failed call is an `alert`
    record on `<prefix>.alerts`, posted to WEBHOOK_URL, and the README's example reads both."""
    import http.server
    import threading

    posted: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            posted.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    prefix = "py" + uuid.uuid4().hex[:8]
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
model_list:
  - model_name: broken
    litellm_params: {{model: openai/error-500, api_base: "{mock_upstream}", api_key: k}}
router_settings: {{num_retries: 0}}
general_settings: {{master_key: sk-kafka, alerting: [webhook]}}
environment_variables: {{WEBHOOK_URL: "http://127.0.0.1:{hook.server_port}/hook"}}
event_log:
  path: {tmp_path / "spool"}
  kafka: {{bootstrap_servers: "{broker}", topic_prefix: {prefix}}}
"""
    )
    port = _free_port()
    gateway = _Process("gateway", [str(switchyard_bin), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)], tmp_path / "gw.log")
    alerts = _Process("alerts", [str(switchyard_bin), "consume", "alerts", "--config", str(config)], tmp_path / "alerts.log")
    try:
        gateway.wait_ready(f"http://127.0.0.1:{port}/health/liveliness")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-kafka", max_retries=0)
        # The consumer starts at the end of the topics: fail calls until one is delivered.
        deadline = time.monotonic() + 60
        while not posted:
            assert time.monotonic() < deadline, "no alert reached the webhook"
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
            wait = time.monotonic() + 2
            while not posted and time.monotonic() < wait:
                time.sleep(0.05)

        consumer = Consumer({"bootstrap.servers": broker, "group.id": "py-" + uuid.uuid4().hex, "auto.offset.reset": "earliest"})
        consumer.subscribe([f"{prefix}.alerts"])
        lines = []
        deadline = time.monotonic() + 60
        while not lines and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            line = _readme_line(json.loads(msg.value()))
            if line is not None:
                lines.append(line)
        consumer.close()
    finally:
        alerts.stop()
        gateway.stop()
        hook.shutdown()

    assert posted[0]["type"] == "alert" and posted[0]["alert_type"] == "llm_exceptions", posted[0]
    assert lines and lines[0].startswith("[High] llm_exceptions broken: LLM API call failed: `500 "), lines
