"""A cluster that speaks only TLS with client certificates (docs/distributed.md, "Secure it"):
``repeatr run --dask tls://…`` works with Dask's TLS settings, and is refused without them.

Its own scheduler and worker (the other tests' cluster is plain TCP), a CA
and one certificate for 127.0.0.1 made here with ``openssl``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from repeatr.errors import Category
from tests.distributed.cluster import Cluster
from tests.distributed.conftest import DaskEnv

pytestmark = [pytest.mark.root, pytest.mark.slow]


def make_certificates(d: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate (with its key) it signed for 127.0.0.1."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "key.pem", "req.csr",
                                                    "cert.pem"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
            str(ca), "-days", "2", "-subj", "/CN=repeatr test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", "/CN=127.0.0.1")
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


@pytest.fixture
def tls_cluster(dask_env: DaskEnv) -> Iterator[Cluster]:
    base = dask_env.area.base / "tls" / uuid.uuid4().hex[:8]
    (base / "certs").mkdir(parents=True)
    cluster = Cluster(base, tls=make_certificates(base / "certs"))
    try:
        cluster.start_scheduler()
        cluster.start_worker("t1", executors="ns")
        cluster.wait_for_workers(["t1"])
        yield cluster
    finally:
        cluster.stop()


def test_a_tls_cluster_runs_for_a_client_with_a_certificate_only(
    dask_env: DaskEnv, tls_cluster: Cluster, tmp_path: Path
) -> None:
    nonce = uuid.uuid4().hex
    formula = tmp_path / "f.json"
    formula.write_text(json.dumps({"formula": {
        "inputs": {"/": dask_env.base},
        "action": {"exec": ["/bin/sh", "-c", f"mkdir /out; echo {nonce} > /out/x"],
                   "userinfo": {"uid": 0, "gid": 0}},
        "outputs": {"/out": {"packtype": "tar"}},
    }}))

    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "repeatr", "run", "--cache", str(tmp_path / "state"),
             "--dask", tls_cluster.address, "--warehouse", dask_env.warehouse, str(formula)],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
            check=False,
        )

    unset = run({})  # no TLS settings at all: said before trying
    assert unset.returncode == Category.USAGE, unset.stderr
    assert "a tls:// scheduler needs Dask's TLS settings" in unset.stderr
    assert "Traceback" not in unset.stderr

    # A certificate of another CA: the scheduler does not let it in.
    (tmp_path / "other").mkdir()
    other = Cluster(tmp_path, tls=make_certificates(tmp_path / "other")).client_env()
    refused = run(other)
    assert refused.returncode == Category.EXECUTOR, refused.stderr
    assert "cannot reach the Dask scheduler tls://" in refused.stderr
    assert "Traceback" not in refused.stderr

    done = run(tls_cluster.client_env())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"]["/out"].startswith("tar:")
