"""Real servers for tests of git and archive sources: `git daemon`, `sshd` and a TLS server with
static files and git smart HTTP, all on 127.0.0.1 and random ports, started and stopped by
fixtures, so the code under test meets real protocols, real auth refusals and real certificates.

Use them from a test module with `pytest_plugins = ["tests.servers"]` (or from conftest.py)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import os
import pwd
import secrets
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

import pytest

from tests.helpers import Daemon, unavailable

HOST = "127.0.0.1"
SSHD = Path("/usr/sbin/sshd")
GIT_SHELL = Path("/usr/bin/git-shell")
# Home of the `git` user when the fixture (or .ci/system-deps.sh) has to create it. Each sshd
# fixture serves its repos from its own folder below the home, so concurrent test sessions
# (pytest-xdist workers, two people's runs) never see or change each other's repos.
GIT_USER_HOME = Path("/var/lib/torchjob-git")
READY_TIMEOUT = 15.0


# ---------------------------------------------------------------- git environment and repos


def git_env(**extra: str) -> dict[str, str]:
    """The environment for a git client in a test: no user or system config, no prompt, no
    inherited GIT_* variable (GIT_DIR from a hook would redirect everything)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    for name in ("SSH_ASKPASS", "SSH_AUTH_SOCK"):
        env.pop(name, None)
    env.update(GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    env.update(extra)
    return env


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run git with hooks off and a fixed identity; return stdout, raise with stderr on failure."""
    argv = [
        "git",
        "-c",
        "user.name=Torchjob Test",
        "-c",
        "user.email=test@torchjob.invalid",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "commit.gpgSign=false",
        "-c",
        "tag.gpgSign=false",
        *args,
    ]
    done = subprocess.run(
        argv, cwd=cwd, env=env or git_env(), capture_output=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({done.returncode}): {done.stderr!r}")
    return done.stdout.decode()


def _dated(i: int) -> dict[str, str]:
    date = f"{1_700_000_000 + 60 * i} +0000"
    return git_env(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)


def make_bare_repo(
    path: Path,
    commits: list[dict[str, str | bytes]],
    *,
    branch: str = "main",
    tags: dict[str, int] | None = None,
) -> list[str]:
    """Build a history with the git CLI and push it into the bare repo `path`; return the SHAs.

    Commit i writes the files of commits[i] (relative paths, parents created) on top of the
    previous tree. Dates and identities are fixed, so the same commits give the same SHAs: calling
    again on an existing `path` with more commits moves `branch` forward (a "moved branch").
    A new bare repo gets `branch` as HEAD and no hooks (empty template). Tags are annotated."""
    shas: list[str] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".work-", dir=path.parent) as tmp:
        work = Path(tmp)
        git("init", "-q", "--template=", "-b", branch, str(work))
        for i, files in enumerate(commits):
            for rel, content in files.items():
                target = work / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content.encode() if isinstance(content, str) else content)
            git("add", "-A", cwd=work)
            git("commit", "-q", "--allow-empty", "-m", f"commit {i}", cwd=work, env=_dated(i))
            shas.append(git("rev-parse", "HEAD", cwd=work).strip())
        refspecs = [f"refs/heads/{branch}:refs/heads/{branch}"]
        for name, index in (tags or {}).items():
            git("tag", "-a", "-m", f"tag {name}", name, shas[index], cwd=work, env=_dated(index))
            refspecs.append(f"refs/tags/{name}:refs/tags/{name}")
        if not path.exists():
            git("init", "-q", "--bare", "--template=", "-b", branch, str(path))
        git("push", "-q", "--force", str(path), *refspecs, cwd=work)
    return shas


# ---------------------------------------------------------------- processes and ports


def free_port() -> int:
    """A port free right now; servers retry with another one if it is taken before they bind."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_on_free_port(
    make_argv: Callable[[int], list[str]], ready: str, env: dict[str, str] | None = None
) -> tuple[Daemon, int]:
    """Start `make_argv(port)` until one start reports ready; a port taken meanwhile is retried."""
    errors: list[str] = []
    for _ in range(5):
        port = free_port()
        daemon = Daemon(make_argv(port), ready=ready, env=env)
        if daemon.wait_ready(READY_TIMEOUT):
            return daemon, port
        daemon.stop()
        errors.append(" | ".join(daemon.lines[-5:]))
        if not any("in use" in line for line in daemon.lines):
            break
    raise RuntimeError(f"{daemon.argv[0]} did not start: {errors}")


# ---------------------------------------------------------------- git daemon


@dataclass(frozen=True)
class GitDaemon:
    """`git daemon` exporting every repo under `root` at git://127.0.0.1:port/NAME."""

    root: Path
    port: int
    daemon: Daemon = field(repr=False)

    def url(self, name: str) -> str:
        return f"git://{HOST}:{self.port}/{name}"

    def stop(self) -> None:
        self.daemon.stop()

    @property
    def log(self) -> list[str]:
        return self.daemon.lines


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    root = tmp_path / "git-daemon"
    root.mkdir()

    def argv(port: int) -> list[str]:
        return [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={root}",
            f"--listen={HOST}",
            f"--port={port}",
            "--informative-errors",
            "--verbose",
            str(root),
        ]

    daemon, port = start_on_free_port(argv, "Ready to rumble", git_env())
    server = GitDaemon(root, port, daemon)
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- sshd


@dataclass(frozen=True)
class Sshd:
    """A real sshd on 127.0.0.1:port; user `git` (shell git-shell) accepts `good_key` only."""

    port: int
    state: Path  # config, host key, client keys, known_hosts
    repos: Path  # where git@127.0.0.1:<prefix>/NAME resolves; owned by git
    prefix: str  # the folder of `repos` relative to the git user's home
    good_key: Path
    bad_key: Path
    known_hosts: Path
    daemon: Daemon = field(repr=False)

    def add_repo(self, src_bare_repo: Path, name: str) -> str:
        """Copy a bare repo to where the server serves NAME (replacing an older copy), owned by
        git, and return its scp-like URL `git@127.0.0.1:<prefix>/NAME`."""
        dest = self.repos / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".add-", dir=dest.parent))
        shutil.copytree(src_bare_repo, staging / "repo", symlinks=True)
        git_user = pwd.getpwnam("git")
        for folder in [staging, *_parents_below(dest.parent, self.repos)]:
            os.chown(folder, git_user.pw_uid, git_user.pw_gid)
            folder.chmod(0o755)
        for dirpath, dirnames, filenames in os.walk(staging / "repo"):
            for entry in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.chown(entry, git_user.pw_uid, git_user.pw_gid, follow_symlinks=False)
        if dest.exists():
            old = staging / "old"
            dest.rename(old)
        (staging / "repo").rename(dest)
        shutil.rmtree(staging)
        return f"git@{HOST}:{self.prefix}/{name}"

    def ssh_url(self, name: str, *, absolute: bool = False) -> str:
        """`ssh://git@127.0.0.1:PORT/~/<prefix>/NAME` (git-upload-pack expands `~/`), or with
        absolute=True the same repo by its absolute path on the server."""
        path = f"{self.repos}/{name}" if absolute else f"/~/{self.prefix}/{name}"
        return f"ssh://git@{HOST}:{self.port}{path}"

    def ssh_command(self, good: bool = True) -> str:
        key = self.good_key if good else self.bad_key
        return shlex.join(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-p",
                str(self.port),
                "-i",
                str(key),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
            ]
        )

    def env(self, good: bool = True) -> dict[str, str]:
        """GIT_SSH_COMMAND reaching this server with the authorized (or the refused) key."""
        return {"GIT_SSH_COMMAND": self.ssh_command(good)}

    @property
    def log(self) -> list[str]:
        return self.daemon.lines


def _parents_below(folder: Path, top: Path) -> list[Path]:
    """`folder` and its parents down to (excluding) `top`."""
    out = []
    while folder != top and top in folder.parents:
        out.append(folder)
        folder = folder.parent
    return out


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def ensure_git_user() -> pwd.struct_passwd:
    """The `git` account sshd lets in: created if missing (shell git-shell); an existing one gets
    a home that exists, a usable shell, and no locked password ('!' makes sshd refuse keys)."""
    try:
        user = pwd.getpwnam("git")
    except KeyError:
        done = _run(
            "useradd",
            "--system",
            "--user-group",
            "--home-dir",
            str(GIT_USER_HOME),
            "--shell",
            str(GIT_SHELL),
            "--password",
            "*",
            "git",
        )
        try:
            user = pwd.getpwnam("git")
        except KeyError:
            raise RuntimeError(f"useradd git failed: {done.stderr.strip()}") from None
    home = Path(user.pw_dir)
    if not home.is_dir() or home == Path("/"):
        if home != GIT_USER_HOME:
            _check(_run("usermod", "--home", str(GIT_USER_HOME), "git"))
        home = GIT_USER_HOME
    if not home.is_dir():
        home.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chown(home, user.pw_uid, user.pw_gid)
    if user.pw_shell not in (str(GIT_SHELL), "/bin/sh", "/bin/bash", "/usr/bin/bash"):
        _run("usermod", "--shell", str(GIT_SHELL), "git")
    shadow = Path("/etc/shadow")
    if shadow.exists():
        for line in shadow.read_text().splitlines():
            fields = line.split(":")
            if fields[0] == "git" and len(fields) > 1 and fields[1].startswith("!"):
                _run("usermod", "--password", "*", "git")
    return pwd.getpwnam("git")


SSHD_CONFIG = """\
ListenAddress {host}
Port {port}
HostKey {state}/host_ed25519
PidFile {state}/sshd.pid
AuthorizedKeysFile {state}/authorized_keys
AllowUsers git
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
UsePAM no
StrictModes no
PermitRootLogin no
PermitUserEnvironment no
AcceptEnv GIT_PROTOCOL
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
PrintMotd no
UseDNS no
MaxStartups 64
MaxSessions 64
LoginGraceTime 30
LogLevel VERBOSE
"""
# OpenSSH >= 9.8 blocks a source address for a while after failed logins: a bad-key test would
# then break the next good-key test. Older sshd refuses the option, so it is added only if known.
PENALTIES = "PerSourcePenalties no\n"


def _start_sshd(state: Path) -> tuple[Daemon, int]:
    def argv(port: int) -> list[str]:
        config = state / "sshd_config"
        text = SSHD_CONFIG.format(host=HOST, port=port, state=state)
        config.write_text(text + PENALTIES)
        if _run(str(SSHD), "-t", "-f", str(config)).returncode != 0:
            config.write_text(text)
        return [str(SSHD), "-D", "-e", "-f", str(config)]

    return start_on_free_port(argv, "Server listening on", {"PATH": os.environ.get("PATH", "")})


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    if not SSHD.exists() or not GIT_SHELL.exists() or shutil.which("ssh-keygen") is None:
        unavailable("sshd, ssh-keygen or git-shell missing: run .ci/system-deps.sh")
    if os.geteuid() != 0:
        unavailable("the sshd fixture needs root (to serve the `git` user)")
    try:
        user = ensure_git_user()
    except (RuntimeError, OSError) as e:
        unavailable(f"cannot set up the `git` user for sshd: {e}")
    run_sshd = Path("/run/sshd")  # privilege separation folder, normally made by systemd
    run_sshd.mkdir(mode=0o755, exist_ok=True)
    # Readable by `git`: sshd reads AuthorizedKeysFile as the user (pytest's tmp is 0700).
    state = Path(tempfile.mkdtemp(prefix="torchjob-sshd-"))
    state.chmod(0o755)
    prefix = f"torchjob-test-{secrets.token_hex(4)}"
    repos = Path(user.pw_dir) / prefix
    daemon: Daemon | None = None
    try:
        repos.mkdir(mode=0o755)
        os.chown(repos, user.pw_uid, user.pw_gid)
        try:
            for key in ("host_ed25519", "good_ed25519", "bad_ed25519"):
                _check(
                    _run(
                        "ssh-keygen",
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        "",
                        "-C",
                        key,
                        "-f",
                        str(state / key),
                    )
                )
            shutil.copy(state / "good_ed25519.pub", state / "authorized_keys")
            (state / "authorized_keys").chmod(0o644)
            daemon, port = _start_sshd(state)
        except RuntimeError as e:
            unavailable(str(e))
        host_key = (state / "host_ed25519.pub").read_text().split()[:2]
        known_hosts = state / "known_hosts"
        known_hosts.write_text(f"[{HOST}]:{port} {' '.join(host_key)}\n")
        yield Sshd(
            port,
            state,
            repos,
            prefix,
            state / "good_ed25519",
            state / "bad_ed25519",
            known_hosts,
            daemon,
        )
    finally:
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(repos, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def _check(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(done.args)} failed: {done.stderr.strip()}")


# ---------------------------------------------------------------- https: files and git


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA (what clients trust) and a server certificate for IP 127.0.0.1."""

    ca_file: Path
    cert_file: Path
    key_file: Path


OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = torchjob test CA
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_tls_files(folder: Path) -> TlsFiles:
    """Self-signed CA plus a leaf for CN/SAN IP 127.0.0.1, made with the openssl CLI. A separate
    CA (rather than one self-signed leaf) satisfies strict verifiers (Python 3.13's X509_STRICT)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg, ca, ca_key = folder / "openssl.cnf", folder / "ca.pem", folder / "ca.key"
    cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
    cfg.write_text(OPENSSL_CONFIG)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for argv in (
        [
            "req",
            "-x509",
            "-config",
            cfg,
            "-extensions",
            "ca_ext",
            *ec,
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-days",
            "3",
        ],
        ["req", "-new", "-config", cfg, *ec, "-subj", f"/CN={HOST}", "-keyout", key, "-out", csr],
        [
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-set_serial",
            "2",
            "-days",
            "3",
            "-extfile",
            cfg,
            "-extensions",
            "server_ext",
            "-out",
            cert,
        ],
    ):
        _check(_run("openssl", *map(str, argv)))
    return TlsFiles(ca, cert, key)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    if shutil.which("openssl") is None:
        unavailable("the openssl CLI is missing: run .ci/system-deps.sh")
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@dataclass
class HttpsServer:
    """TLS on 127.0.0.1: /files/NAME from `files`, /git/NAME via `git http-backend` over
    `git_root`. Set `require_token` to demand Basic (any user, password = token) or Bearer auth
    on /git/. Every request's path, Authorization value and (method, path, status) is recorded."""

    port: int
    ca_file: Path
    files: Path
    git_root: Path
    require_token: str | None = None
    auth_seen: list[str] = field(default_factory=list)
    paths_seen: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    backend_log: list[str] = field(default_factory=list)
    # When `hold_packs` is set to an Event, each POST .../git-upload-pack sets `pack_requested`
    # and waits for `hold_packs` before git runs: a test can kill a client mid-clone, no timing.
    hold_packs: threading.Event | None = None
    # The next `fail_next` git requests get 503 Service Unavailable (a flaky server).
    fail_next: int = 0
    # When set, each request records the command line of every process whose argv holds this
    # string (`argv_holding`): the client is alive then, waiting for the answer.
    watch_argv: str | None = None
    argv_holding: list[str] = field(default_factory=list)
    pack_requested: threading.Event = field(default_factory=threading.Event)
    _httpd: _TlsHttpServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def url(self, path: str) -> str:
        return f"https://{HOST}:{self.port}/{path.lstrip('/')}"

    def client_env(self) -> dict[str, str]:
        """What a client needs to trust this server (git: GIT_SSL_CAINFO, Python: SSL_CERT_FILE)."""
        return {"GIT_SSL_CAINFO": str(self.ca_file), "SSL_CERT_FILE": str(self.ca_file)}

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def stop(self) -> None:
        if self.hold_packs is not None:
            self.hold_packs.set()
        if self._httpd is not None:
            self._httpd.close_all()
        if self._thread is not None:
            self._thread.join(timeout=10)


class _TlsHttpServer(ThreadingHTTPServer):
    """TLS handshakes happen in the per-connection thread, so one silent client cannot block
    accept(); open connections are tracked so stop() really cuts keep-alive clients off."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, state: HttpsServer) -> None:
        self.context = context
        self.state = state
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        super().__init__((HOST, 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.lock:
            self.open.add(tls)
        return tls, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(30)
            request.do_handshake()
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (kill -9 mid-clone) is expected: keep it out of stderr."""
        self.state.backend_log.append(f"connection from {client_address}: {sys.exc_info()[1]!r}")

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.open.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        self.shutdown()
        self.server_close()
        with self.lock:
            for sock in list(self.open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _TlsHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # `requests` records what matters; no noise on stderr

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        state = self.server.state
        state.paths_seen.append(self.path)
        if state.watch_argv:
            state.argv_holding += _argv_holding(state.watch_argv)
        auth = self.headers.get("Authorization")
        if auth is not None:
            state.auth_seen.append(auth)
        path, _, query = self.path.partition("?")
        if path.startswith("/files/") and self.command in ("GET", "HEAD"):
            self._file(unquote(path[len("/files/") :]))
        elif path.startswith("/git/") and state.fail_next > 0:  # a transient server error
            state.fail_next -= 1
            self._simple(503, b"try again later\n")
        elif path.startswith("/git/"):
            user = self._user(state.require_token)
            if user is None:
                self._simple(
                    401, b"authentication required\n", {"WWW-Authenticate": 'Basic realm="git"'}
                )
            else:
                if self.command == "POST" and path.endswith("/git-upload-pack"):
                    state.pack_requested.set()
                    if state.hold_packs is not None:
                        state.hold_packs.wait(timeout=60)
                self._cgi(unquote(path[len("/git") :]), query, user)
        else:
            self._simple(404, b"not found\n")

    def _record(self, code: int) -> None:
        self.server.state.requests.append((self.command, self.path, code))

    def _simple(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        if self.command == "POST" or self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # the unread request body would poison the next one
        self._record(code)
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _user(self, token: str | None) -> str | None:
        """The authenticated user name ('' when no token is required), None when refused."""
        if token is None:
            return ""
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return "bearer" if _same(value.strip(), token) else None
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except ValueError:
                return None
            name, _, password = decoded.partition(":")
            return (name or "basic") if _same(password, token) else None
        return None

    def _file(self, name: str) -> None:
        root = self.server.state.files.resolve()
        target = (root / name).resolve()
        if root not in target.parents or not target.is_file():
            self._simple(404, b"not found\n")
            return
        data = target.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:  # a real server's conditional GET
            self._record(304)
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self._record(200)
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _cgi(self, path_info: str, query: str, user: str) -> None:
        state = self.server.state
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(state.git_root),
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_PROJECT_ROOT": str(state.git_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "REMOTE_ADDR": self.client_address[0],
        }
        if user:
            env["REMOTE_USER"] = user
        length = self.headers.get("Content-Length")
        if length is not None:
            env["CONTENT_LENGTH"] = length
        for header in ("Git-Protocol", "Content-Encoding"):
            if header in self.headers:
                env["HTTP_" + header.upper().replace("-", "_")] = self.headers[header]
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        proc = subprocess.Popen(
            ["git", "http-backend"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        feeder = threading.Thread(target=self._feed, args=(proc, length, chunked), daemon=True)
        errors = threading.Thread(target=self._errors, args=(proc,), daemon=True)
        feeder.start()
        errors.start()
        try:
            self._relay(cast(io.BufferedReader, proc.stdout))
        except BaseException:
            proc.kill()  # the client went away: nobody reads the rest
            raise
        finally:
            feeder.join(timeout=30)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            errors.join(timeout=5)

    def _feed(self, proc: subprocess.Popen[bytes], length: str | None, chunked: bool) -> None:
        """Stream the request body into the CGI's stdin (Content-Length or chunked)."""
        assert proc.stdin is not None
        try:
            if chunked:
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        break
                    proc.stdin.write(self.rfile.read(size))
                    self.rfile.readline()
            elif length:
                left = int(length)
                while left > 0:
                    block = self.rfile.read(min(left, 65536))
                    if not block:
                        break
                    proc.stdin.write(block)
                    left -= len(block)
        except (OSError, ValueError):
            self.close_connection = True
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def _errors(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.server.state.backend_log.append(line.decode(errors="replace").rstrip("\n"))

    def _relay(self, out: io.BufferedReader) -> None:
        """CGI headers (with Status) to an HTTP response; the body streamed, chunked unless the
        CGI gave a Content-Length."""
        code, reason, headers = 200, None, []
        first = out.peek(1)
        if not first:
            self._simple(502, b"git http-backend gave no response\n")
            return
        while (line := out.readline().rstrip(b"\r\n")) != b"":
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "status":
                status = value.strip().split(" ", 1)
                code, reason = int(status[0]), (status[1] if len(status) > 1 else None)
            else:
                headers.append((name.strip(), value.strip()))
        self._record(code)
        self.send_response(code, reason)
        sized = any(name.lower() == "content-length" for name, _ in headers)
        for name, value in headers:
            self.send_header(name, value)
        if not sized:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while block := out.read1(65536):
            self.wfile.write(block if sized else b"%x\r\n%s\r\n" % (len(block), block))
        if not sized:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _argv_holding(text: str) -> list[str]:
    """The command lines of the processes on this machine whose argv holds text."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if text.encode() in argv:
            found.append(argv.replace(b"\0", b" ").decode(errors="replace"))
    return found


@pytest.fixture
def https_server(tmp_path: Path, tls_files: TlsFiles) -> Iterator[HttpsServer]:
    files, git_root = tmp_path / "https-files", tmp_path / "https-git"
    files.mkdir()
    git_root.mkdir()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files.cert_file, tls_files.key_file)
    state = HttpsServer(0, tls_files.ca_file, files, git_root)
    httpd = _TlsHttpServer(context, state)
    state.port = int(httpd.server_address[1])
    state._httpd = httpd
    state._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    state._thread.start()  # listening since the constructor bound; accept() comes next
    try:
        yield state
    finally:
        state.stop()
