"""Alerts reach a webhook (a real HTTP server on 127.0.0.1) and an SMTP server (a minimal real one on
127.0.0.1), always leave a structured log line, and never raise when a channel is down."""

import json
import logging
import socketserver
import threading
from email import message_from_bytes

import pytest

from precision_marketing.reporting.alerts import notify

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser


@pytest.fixture
def smtp_server():
    """Just enough SMTP (RFC 5321) to accept one message per connection and keep it."""
    messages = []

    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line):
            self.wfile.write(line.encode() + b"\r\n")

        def handle(self):
            self.reply("220 localhost test SMTP")
            envelope = {"to": []}
            while line := self.rfile.readline():
                command = line.decode().strip()
                verb = command.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    self.reply("250 localhost")
                elif verb == "MAIL":
                    envelope["from"] = command
                    self.reply("250 OK")
                elif verb == "RCPT":
                    envelope["to"].append(command)
                    self.reply("250 OK")
                elif verb == "DATA":
                    self.reply("354 end with <CRLF>.<CRLF>")
                    data = b""
                    while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                        data += chunk
                    messages.append({**envelope, "message": message_from_bytes(data)})
                    self.reply("250 OK")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("250 OK")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], messages
    server.shutdown()
    server.server_close()


CONTEXT = {"dag_id": "nightly_marketing", "ds": "2026-11-22", "run_id": "scheduled__2026-11-22", "task_id": "train_als"}


def test_webhook_gets_a_slack_compatible_body(webhook):
    url, received = webhook
    received.clear()
    outcome = notify("error", "task train_als failed: boom", CONTEXT, environ={"PM_ALERT_WEBHOOK_URL": url})
    assert outcome == {"log": "sent", "webhook": "sent"}
    [call] = received
    assert call["path"] == "/hooks/T000/B000" and call["type"] == "application/json"
    text = call["body"]["text"]
    assert text.startswith("[ERROR] nightly_marketing ds=2026-11-22: task train_als failed: boom")
    assert "run_id: scheduled__2026-11-22" in text and "task_id: train_als" in text
    assert call["body"]["context"]["task_id"] == "train_als" and call["body"]["level"] == "error"


def test_email_is_sent_through_smtp(smtp_server):
    port, messages = smtp_server
    environ = {
        "PM_ALERT_SMTP_HOST": "127.0.0.1",
        "PM_ALERT_SMTP_PORT": str(port),
        "PM_ALERT_SMTP_FROM": "airflow@example.com",
        "PM_ALERT_SMTP_TO": "data@example.com, ops@example.com",
    }
    outcome = notify("warning", "ALS did not beat popularity; published the fallback", CONTEXT, environ=environ)
    assert outcome == {"log": "sent", "email": "sent"}
    [mail] = messages
    assert len(mail["to"]) == 2
    assert mail["message"]["Subject"].startswith("[WARNING] nightly_marketing ds=2026-11-22: ALS did not beat")
    assert "task_id: train_als" in mail["message"].get_payload()


def test_structured_log_line_always_and_level_threshold(webhook, caplog):
    url, received = webhook
    received.clear()
    with caplog.at_level(logging.INFO, logger="precision_marketing.reporting.alerts"):
        outcome = notify("info", "run finished", CONTEXT, environ={"PM_ALERT_WEBHOOK_URL": url})
    assert outcome == {"log": "sent"} and received == []  # below the default minimum level (warning)
    record = json.loads(caplog.records[-1].getMessage())
    assert record == {"alert": "info", "message": "run finished", **CONTEXT}
    notify("info", "run finished", CONTEXT, environ={"PM_ALERT_WEBHOOK_URL": url, "PM_ALERT_MIN_LEVEL": "info"})
    assert len(received) == 1


def test_a_dead_channel_is_reported_not_raised(caplog):
    outcome = notify(
        "error",
        "x",
        CONTEXT,
        environ={
            "PM_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/nothing-listens",
            "PM_ALERT_SMTP_HOST": "127.0.0.1",
            "PM_ALERT_SMTP_PORT": "9",
            "PM_ALERT_SMTP_TO": "a@example.com",
        },
    )
    assert outcome["log"] == "sent"
    assert outcome["webhook"].startswith("error:") and outcome["email"].startswith("error:")
    assert "alert channel webhook failed" in caplog.text


def test_unknown_level_is_rejected():
    with pytest.raises(ValueError, match="alert level must be one of"):
        notify("fatal", "x")
