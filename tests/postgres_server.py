"""A real PostgreSQL server for the tests marked `postgres`.

`postgres_url` (session fixture) is, in this order: the server named by $NAS_TEST_POSTGRES_URL (.ci/run
starts one and sets it), or a throwaway server started here when PostgreSQL's `initdb` is installed
(on PATH or under /usr/lib/postgresql/*/bin; run as the `postgres` user when we are root, since the
server refuses to run as root), on 127.0.0.1 with password authentication and a temporary data
directory, stopped at the end of the session. Without either the tests are skipped, saying why.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

ENV_VAR = "NAS_TEST_POSTGRES_URL"
USER, PASSWORD, DB = "nas", "nas-test-pw", "nas_test"


def find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root without runuser: cannot start PostgreSQL as a normal user")
    return [runuser, "-u", "postgres", "--", *cmd]


def start_server(base: Path) -> tuple[str, list[str]]:
    """initdb + pg_ctl start in `base`; returns (URL of database DB, the stop command)."""
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise FileNotFoundError("initdb/pg_ctl not found")
    data, sock = base / "data", base / "sock"
    sock.mkdir(parents=True)
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        for p in (sock, pwfile):
            shutil.chown(p, "postgres")
    subprocess.run(_as_server_user([initdb, "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
                                    "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8"]),
                   check=True, capture_output=True, text=True)
    port = free_port()
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w",
                                    "-t", "60", "start"]), check=True, capture_output=True, text=True)
    stop = _as_server_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"])
    url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}"
    try:
        _create_database(f"{url}/postgres", DB)
    except Exception:
        subprocess.run(stop, capture_output=True)
        raise
    return f"{url}/{DB}", stop


def _create_database(admin_url: str, name: str) -> None:
    import sqlalchemy
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        for _ in range(50):
            try:
                with engine.connect() as con:
                    con.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
                return
            except sqlalchemy.exc.OperationalError:   # still starting
                time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL at {admin_url} did not accept connections")
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests need the driver: pip install -e '.[postgres]'")
    url = os.environ.get(ENV_VAR)
    if url:
        yield url
        return
    if find_bin("initdb") is None:
        pytest.skip(f"no PostgreSQL server: set {ENV_VAR} or install PostgreSQL (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="nas-pg-"))
    os.chmod(base, 0o755)
    try:
        url, stop = start_server(base)
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot start a throwaway PostgreSQL server: {exc} {detail.strip()[:300]}")
    try:
        yield url
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def study_name() -> str:
    """A fresh study name per test (tests share the server's database)."""
    return f"t-{uuid.uuid4().hex[:12]}"
