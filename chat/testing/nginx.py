"""Debian's nginx, running deploy/nginx.conf itself in front of test daphne processes.

The shipped file is rendered into a temporary prefix: its ports become free ones on 127.0.0.1,
its upstream lists the given daphne ports, its certificate a self-signed one made here, its
static root a given directory. Everything else (headers, timeouts, locations) is the file as
shipped. Each replacement must match exactly once, so a change to the file that the test cannot
follow fails loudly instead of testing something else.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from chat.testing.redis_server import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "nginx.conf"


class NginxUnavailable(RuntimeError):
    """nginx (or openssl, for the test certificate) is not installed."""


def _replace_once(text: str, pattern: str, replacement: str) -> str:
    rendered, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise AssertionError(f"deploy/nginx.conf: {pattern!r} matched {count} times, not once")
    return rendered


@dataclass
class NginxServer:
    """An nginx master process this code started on deploy/nginx.conf, until stop()."""

    upstream_ports: list[int]
    static_root: Path
    https_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    prefix: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="chat-nginx-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def wss_url(self) -> str:
        return f"wss://127.0.0.1:{self.https_port}"

    @property
    def certificate(self) -> Path:
        return self.prefix / "cert.pem"

    def site(self) -> str:
        """deploy/nginx.conf with this server's ports, upstreams, certificate and static root."""
        text = SHIPPED.read_text()
        servers = "".join(
            f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;\n"
            for port in self.upstream_ports
        )
        text = _replace_once(text, r"(?:^    server 127\.0\.0\.1:\d+ .*;\n)+", servers)
        text = _replace_once(text, r"^    listen 80;", f"    listen 127.0.0.1:{self.http_port};")
        text = _replace_once(
            text, r"^    listen 443 ssl", f"    listen 127.0.0.1:{self.https_port} ssl"
        )
        # $host has no port: the redirect must name the test's https port.
        text = _replace_once(
            text,
            r"return 301 https://\$host\$request_uri;",
            f"return 301 https://$host:{self.https_port}$request_uri;",
        )
        text = _replace_once(text, r"ssl_certificate \S+;", f"ssl_certificate {self.certificate};")
        text = _replace_once(
            text, r"ssl_certificate_key \S+;", f"ssl_certificate_key {self.prefix / 'key.pem'};"
        )
        # STATIC_ROOT is <root>/static, as /var/lib/chat/static is in production.
        assert self.static_root.name == "static", "nginx serves /static/ from <root>/static"
        return _replace_once(text, r"root /var/lib/chat;", f"root {self.static_root.parent};")

    def main_config(self) -> str:
        """The main nginx.conf around the site: in the foreground, every file in the prefix."""
        # As root nginx's workers would switch to `nobody`, who cannot read the test's
        # private temporary files; as anyone else, `user` is not allowed.
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "".join(
            f"    {kind}_temp_path {self.prefix / kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            f"{user}daemon off;\nworker_processes 1;\npid {self.prefix / 'nginx.pid'};\n"
            f"error_log {self.prefix / 'error.log'} warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n    include /etc/nginx/mime.types;\n"
            "    default_type application/octet-stream;\n"
            f"    access_log {self.prefix / 'access.log'};\n{temp}"
            f"    include {self.prefix / 'chat.conf'};\n}}\n"
        )

    def _make_certificate(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise NginxUnavailable("openssl is not installed (make test installs it)")
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(self.prefix / "key.pem"),
                "-out",
                str(self.certificate),
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> NginxServer:
        """Render the configuration, start nginx in the foreground and wait until it listens."""
        # Debian puts it in /usr/sbin, which a non-root PATH may lack.
        binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
        if binary is None:
            raise NginxUnavailable("nginx is not installed (make test installs it)")
        self._make_certificate()
        (self.prefix / "chat.conf").write_text(self.site())
        (self.prefix / "nginx.conf").write_text(self.main_config())
        self.process = subprocess.Popen(
            [
                binary,
                "-p",
                str(self.prefix),
                "-c",
                str(self.prefix / "nginx.conf"),
                # Before it reads the configuration, nginx opens its compiled-in error log
                # (/var/log/nginx/error.log), which a non-root user may not write.
                "-e",
                str(self.prefix / "error.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # everything goes to error.log
        )
        try:
            wait_for_port(self.https_port, timeout=10)
            wait_for_port(self.http_port, timeout=10)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"nginx did not start:\n{self.errors()}") from None
        return self

    def errors(self) -> str:
        """What nginx wrote to its error log so far."""
        log = self.prefix / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def stop(self) -> None:
        """Stop nginx at once (SIGTERM: open sockets are cut) and remove its prefix."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        shutil.rmtree(self.prefix, ignore_errors=True)
