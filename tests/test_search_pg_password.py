"""The PostgreSQL password never lands on disk (issue 18): a run started with
``--storage postgresql://USER:PASSWORD@HOST/DB`` writes no file holding the password, and its
workers, ``status``, ``report`` and ``--resume`` still connect, taking the password from
PGPASSWORD, ~/.pgpass (libpq) or LASERKIT_STORAGE. On the real server of
test_search_postgres.py, with a role that must give its password (scram-sha-256)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_search_cli import tiny_dir  # noqa: F401 - a fixture
from test_search_postgres import postgres  # noqa: F401 - a fixture

LASERKIT = str(Path(sys.executable).with_name("laserkit"))
SECRET = "S3cret-pw-4711"
GRID = (
    "--task",
    "fever-bigbench",
    "--limit",
    "10",
    "--lname",
    "fc_in",
    "--lnum=-1",
    "--rho",
    "0.5",
    "--dtype",
    "float32",
    "--device",
    "cpu",
    "--no-save",
)


@pytest.fixture(scope="module")
def secret_db(postgres):  # noqa: F811
    """A database owned by a role that must authenticate with its password; its URL without
    the password (the server's other users stay trusted, as the fixture made them)."""
    url = sa.engine.make_url(postgres).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sa.text(f"CREATE ROLE secretive LOGIN PASSWORD '{SECRET}'"))
        c.execute(sa.text("CREATE DATABASE secretdb OWNER secretive"))
        hba = c.execute(sa.text("SHOW hba_file")).scalar()
        lines = [
            "local all all trust",
            "host secretdb secretive 127.0.0.1/32 scram-sha-256",
            "host all all 127.0.0.1/32 trust",
            "host all all ::1/128 trust",
        ]
        array = ", ".join(f"'{ln}'" for ln in lines)
        c.execute(sa.text(f"COPY (SELECT unnest(ARRAY[{array}])) TO '{hba}'"))
        c.execute(sa.text("SELECT pg_reload_conf()"))
    engine.dispose()
    plain = url.set(username="secretive", database="secretdb", drivername="postgresql")
    with pytest.raises(sa.exc.OperationalError, match="password"):  # the password is needed
        sa.create_engine(plain.set(drivername="postgresql+psycopg")).connect().close()
    return plain.render_as_string(hide_password=False)


def lk(*args: object, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PGPASSWORD", "LASERKIT_STORAGE", "PGPASSFILE")
    }
    return subprocess.run(
        [LASERKIT, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**clean, "OMP_NUM_THREADS": "1", "HOME": str(cwd), **env},
    )


def test_the_password_is_never_written_and_every_session_still_connects(
    secret_db,
    tiny_dir,  # noqa: F811 - a fixture
    tmp_path,
):
    full = secret_db.replace("secretive@", f"secretive:{SECRET}@")
    made = lk(
        "search",
        tiny_dir,
        *GRID,
        "--storage",
        full,
        "--run",
        "pw",
        "--run-dir",
        "run",
        "--workers",
        "0",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    assert SECRET not in made.stdout + made.stderr
    pointer = (tmp_path / "run" / "store.json").read_text()
    assert secret_db in pointer.replace("postgresql+psycopg", "postgresql")

    # the stored URL alone is refused by the server, in one line saying where a password goes
    bare = lk("status", "run", cwd=tmp_path)
    assert bare.returncode == 2 and "PGPASSWORD" in bare.stderr, bare.stderr[-2000:]
    assert len(bare.stderr.strip().splitlines()) == 1

    work = lk(
        "worker", secret_db, "--run", "pw", "--device", "cpu", cwd=tmp_path, PGPASSWORD=SECRET
    )
    assert work.returncode == 0, work.stderr[-2000:]
    status = lk("status", "run", cwd=tmp_path, LASERKIT_STORAGE=full)
    assert status.returncode == 0 and "finished" in status.stdout, status.stderr[-2000:]
    (tmp_path / ".pgpass").write_text(
        f"{sa.engine.make_url(secret_db).host}:*:secretdb:secretive:{SECRET}\n"
    )
    (tmp_path / ".pgpass").chmod(0o600)
    resumed = lk(
        "search",
        tiny_dir,
        *GRID,
        "--storage",
        secret_db,
        "--run",
        "pw",
        "--run-dir",
        "run",
        "--resume",
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (tmp_path / ".pgpass").unlink()
    report = lk("report", "run", "--out", "rep", cwd=tmp_path, PGPASSWORD=SECRET)
    assert report.returncode == 0, report.stderr[-2000:]

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"store.json", "result.json", "report.md"} <= {p.name for p in written}
    assert not [p for p in written if SECRET.encode() in p.read_bytes()]
