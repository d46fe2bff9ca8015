"""Alerts reach a Slack webhook (a real HTTP server on 127.0.0.1) and an SMTP server (a minimal real one on
127.0.0.1) through Airflow connections and the providers' notifiers, always leave a structured log line, and never
raise when a channel is down."""

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


@pytest.fixture
def airflow_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    return tmp_path / "airflow"


SETTINGS = {
    "slack_connection": "pm_alerts_slack",
    "smtp_connection": "pm_alerts_smtp",
    "email_to": ["data@example.com", "ops@example.com"],
    "min_level": "warning",
}


def slack_connection(monkeypatch, url: str) -> None:
    base, token = url.split("/hooks/")
    connection = {"conn_type": "slackwebhook", "host": base, "password": "hooks/" + token}
    monkeypatch.setenv("AIRFLOW_CONN_PM_ALERTS_SLACK", json.dumps(connection))


def smtp_connection(monkeypatch, port: int, **extra) -> None:
    connection = {"conn_type": "smtp", "host": "127.0.0.1", "port": port, "login": extra.pop("login", None)}
    connection.update(password=extra.pop("password", None), extra={"from_email": "airflow@example.com", **extra})
    monkeypatch.setenv("AIRFLOW_CONN_PM_ALERTS_SMTP", json.dumps(connection))


def test_a_slack_webhook_connection_gets_the_alert_through_the_providers_notifier(webhook, airflow_home, monkeypatch):
    url, received = webhook
    received.clear()
    slack_connection(monkeypatch, url)
    outcome = notify("error", "task train_als failed: boom", CONTEXT, settings=SETTINGS)
    assert outcome == {"log": "sent", "slack": "sent"}
    [call] = received
    assert call["path"] == "/hooks/T000/B000" and call["type"].startswith("application/json")
    text = call["body"]["text"]
    assert text.startswith("[ERROR] nightly_marketing ds=2026-11-22: task train_als failed: boom")
    assert "run_id: scheduled__2026-11-22" in text and "task_id: train_als" in text


def test_an_smtp_connection_sends_through_the_providers_notifier(smtp_server, airflow_home, monkeypatch):
    port, messages = smtp_server
    smtp_connection(monkeypatch, port, disable_tls=True, disable_ssl=True)
    outcome = notify("warning", "ALS did not beat popularity; published the fallback", CONTEXT, settings=SETTINGS)
    assert outcome == {"log": "sent", "email": "sent"}
    [mail] = messages
    assert len(mail["to"]) == 2
    assert mail["message"]["Subject"].startswith("[WARNING] nightly_marketing ds=2026-11-22: ALS did not beat")
    body = "".join(p.get_payload(decode=True).decode() for p in mail["message"].walk() if not p.is_multipart())
    assert "task_id: train_als" in body


def test_smtp_never_sends_a_password_without_tls(smtp_server, airflow_home, monkeypatch):
    port, messages = smtp_server
    smtp_connection(monkeypatch, port, login="pm", password="hunter2", disable_tls=True, disable_ssl=True)
    outcome = notify("error", "boom", CONTEXT, settings=SETTINGS)
    assert outcome["email"].startswith("error: refusing to send the SMTP password without TLS") and messages == []


def test_structured_log_line_always_and_level_threshold(webhook, airflow_home, monkeypatch, caplog):
    url, received = webhook
    received.clear()
    slack_connection(monkeypatch, url)
    with caplog.at_level(logging.INFO, logger="precision_marketing.reporting.alerts"):
        outcome = notify("info", "run finished", CONTEXT, settings=SETTINGS)
    assert outcome == {"log": "sent"} and received == []  # below the default minimum level (warning)
    record = json.loads(caplog.records[-1].getMessage())
    assert record == {"alert": "info", "message": "run finished", **CONTEXT}
    notify("info", "run finished", CONTEXT, settings={**SETTINGS, "min_level": "info"})
    assert len(received) == 1


def test_no_connection_means_the_log_line_only(airflow_home):
    assert notify("error", "boom", CONTEXT, settings=SETTINGS) == {"log": "sent"}


def test_dead_channels_are_reported_not_raised_and_never_show_the_token(airflow_home, monkeypatch, caplog):
    monkeypatch.setenv(
        "AIRFLOW_CONN_PM_ALERTS_SLACK",
        json.dumps({"conn_type": "slackwebhook", "host": "http://127.0.0.1:9", "password": "T000/B000/sEcReTtOkEn"}),
    )
    smtp_connection(monkeypatch, 9, disable_tls=True, disable_ssl=True)
    with caplog.at_level(logging.DEBUG):
        outcome = notify("error", "x", CONTEXT, settings=SETTINGS)
    assert outcome["log"] == "sent"
    assert outcome["slack"].startswith("error:") and outcome["email"].startswith("error:")
    assert "alert channel slack failed" in caplog.text
    assert "sEcReTtOkEn" not in json.dumps(outcome) and "sEcReTtOkEn" not in caplog.text


def test_unknown_level_is_rejected():
    with pytest.raises(ValueError, match="alert level must be one of"):
        notify("fatal", "x")


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


def test_starttls_verifies_the_certificate(tmp_path, airflow_home, monkeypatch):
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
    # STARTTLS (no implicit SSL), the provider's default certificate check
    smtp_connection(monkeypatch, port, disable_ssl=True)
    outcome = notify("error", "boom", CONTEXT, settings=SETTINGS)
    thread.join(timeout=10)
    listener.close()
    assert "CERTIFICATE_VERIFY_FAILED" in outcome["email"] and not got_data
