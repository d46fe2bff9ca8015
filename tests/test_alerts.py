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


def test_a_webhook_token_never_reaches_the_log(caplog):
    token_url = "hooks.example.com/services/T000/B000/sEcReTtOkEn"  # no scheme: urllib would quote it whole
    for url in (token_url, "https://127.0.0.1:9/services/T000/B000/sEcReTtOkEn"):
        with caplog.at_level(logging.ERROR, logger="precision_marketing.reporting.alerts"):
            outcome = notify("error", "boom", CONTEXT, environ={"PM_ALERT_WEBHOOK_URL": url})
        assert outcome["webhook"].startswith("error: ")
        assert "sEcReTtOkEn" not in outcome["webhook"] and "sEcReTtOkEn" not in caplog.text


def test_smtp_never_sends_a_password_without_tls(smtp_server):
    port, messages = smtp_server
    environ = {
        "PM_ALERT_SMTP_HOST": "127.0.0.1",
        "PM_ALERT_SMTP_PORT": str(port),
        "PM_ALERT_SMTP_TO": "ops@example.com",
        "PM_ALERT_SMTP_USER": "pm",
        "PM_ALERT_SMTP_PASSWORD": "hunter2",
    }
    outcome = notify("error", "boom", CONTEXT, environ=environ)
    assert outcome["email"].startswith("error: refusing to send the SMTP password without TLS")
    assert messages == []


def self_signed(directory):
    """A certificate for 127.0.0.1 that no CA signed (what a man in the middle would present)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return directory / "cert.pem", directory / "key.pem"


def test_starttls_verifies_the_certificate(tmp_path):
    """A STARTTLS server with a certificate nobody signed gets no message (the old code accepted any certificate)."""
    import socket
    import ssl

    cert, key = self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    got_data = []

    def serve():
        connection, _ = listener.accept()
        reader = connection.makefile("rb")
        connection.sendall(b"220 localhost\r\n")
        while line := reader.readline():
            verb = line.decode().split(" ", 1)[0].strip().upper()
            if verb == "STARTTLS":
                connection.sendall(b"220 go ahead\r\n")
                try:
                    connection = server_tls.wrap_socket(connection, server_side=True)
                except (ssl.SSLError, OSError):
                    return  # the client refused the certificate
                reader = connection.makefile("rb")
            elif verb == "EHLO":
                connection.sendall(b"250-localhost\r\n250 STARTTLS\r\n")
            elif verb == "DATA":
                got_data.append(True)
                connection.sendall(b"354 go\r\n")
            else:
                connection.sendall(b"250 OK\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    environ = {
        "PM_ALERT_SMTP_HOST": "127.0.0.1",
        "PM_ALERT_SMTP_PORT": str(port),
        "PM_ALERT_SMTP_TO": "ops@example.com",
        "PM_ALERT_SMTP_STARTTLS": "true",
    }
    outcome = notify("error", "boom", CONTEXT, environ=environ)
    thread.join(timeout=10)
    listener.close()
    assert "CERTIFICATE_VERIFY_FAILED" in outcome["email"] and not got_data


# ---- channels from Airflow connections, sent by the providers' notifiers


@pytest.fixture
def airflow_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    return tmp_path / "airflow"


SETTINGS = {"slack_connection": "pm_alerts_slack", "smtp_connection": "pm_alerts_smtp", "email_to": ["ops@example.com"]}


def test_a_slack_webhook_connection_gets_the_alert_through_the_providers_notifier(webhook, airflow_home, monkeypatch):
    url, received = webhook
    received.clear()
    base, token = url.split("/hooks/")
    monkeypatch.setenv(
        "AIRFLOW_CONN_PM_ALERTS_SLACK",
        json.dumps({"conn_type": "slackwebhook", "host": base, "password": "hooks/" + token}),
    )
    outcome = notify("error", "task train_als failed: boom", CONTEXT, environ={}, settings=SETTINGS)
    assert outcome == {"log": "sent", "slack": "sent"}
    [call] = received
    assert call["path"] == "/hooks/T000/B000"
    assert call["body"]["text"].startswith("[ERROR] nightly_marketing ds=2026-11-22: task train_als failed: boom")


def test_an_smtp_connection_sends_through_the_providers_notifier(smtp_server, airflow_home, monkeypatch):
    port, messages = smtp_server
    smtp = {"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": {"from_email": "airflow@example.com"}}
    monkeypatch.setenv(
        "AIRFLOW_CONN_PM_ALERTS_SMTP",
        json.dumps({**smtp, "extra": {**smtp["extra"], "disable_tls": True, "disable_ssl": True}}),
    )
    outcome = notify("warning", "ALS did not beat popularity", CONTEXT, environ={}, settings=SETTINGS)
    assert outcome == {"log": "sent", "email": "sent"}
    [mail] = messages
    assert mail["message"]["Subject"].startswith("[WARNING] nightly_marketing ds=2026-11-22: ALS did not beat")
    # a login over plain SMTP is refused before anything is sent
    messages.clear()
    monkeypatch.setenv(
        "AIRFLOW_CONN_PM_ALERTS_SMTP",
        json.dumps({**smtp, "login": "pm", "password": "hunter2", "extra": {"disable_tls": True, "disable_ssl": True}}),
    )
    outcome = notify("error", "boom", CONTEXT, environ={}, settings=SETTINGS)
    assert outcome["email"].startswith("error: refusing to send the SMTP password without TLS") and messages == []


def test_no_connection_means_the_log_line_only(airflow_home):
    assert notify("error", "boom", CONTEXT, environ={}, settings=SETTINGS) == {"log": "sent"}


def test_a_dead_slack_connection_is_reported_without_its_token(airflow_home, monkeypatch, caplog):
    monkeypatch.setenv(
        "AIRFLOW_CONN_PM_ALERTS_SLACK",
        json.dumps({"conn_type": "slackwebhook", "host": "http://127.0.0.1:9", "password": "T000/B000/sEcReTtOkEn"}),
    )
    with caplog.at_level(logging.DEBUG):
        outcome = notify("error", "boom", CONTEXT, environ={}, settings=SETTINGS)
    assert outcome["slack"].startswith("error: ")
    assert "sEcReTtOkEn" not in outcome["slack"] and "sEcReTtOkEn" not in caplog.text
