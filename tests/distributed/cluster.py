"""A real Dask cluster on loopback for the tests and the benchmark: a scheduler
and workers started as ``dask scheduler`` / ``dask worker`` processes.

Each worker runs repeatr's preload (``--preload repeatr.distributed``) under
a nanny, has its own state dir (``REPEATR_CACHE``) and Dask scratch dir, and
may be limited to some executors (``--repeatr-executors``). Every process is
started in a session of its own; ``stop()`` SIGKILLs each session and waits
for it to be empty, so nothing of the cluster outlives the caller.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DASK = Path(sys.executable).with_name("dask")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def session_pids(sid: int) -> list[int]:
    """The processes of session ``sid`` (its leader's pid)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:  # field 6 of stat: the session
            pids.append(int(entry))
    return pids


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def command_line(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def has_nonce(pid: int, nonce: str) -> bool:
    """Whether process ``pid``'s environment holds ``NONCE=nonce`` (a test's job)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"NONCE={nonce}".encode() in f.read()
    except OSError:
        return False


def jobs_with(nonce: str) -> list[int]:
    """The processes whose environment holds ``NONCE=nonce``."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and has_nonce(int(p), nonce)]


def wait_until(predicate: Callable[[], bool], timeout: float = 60) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass
class Cluster:
    """A scheduler and its workers, each a process in a session of its own."""

    base: Path
    scheduler_port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: TLS for every connection: (CA, certificate, key) PEM files; None: plain TCP.
    tls: tuple[Path, Path, Path] | None = None

    @property
    def address(self) -> str:
        scheme = "tls" if self.tls else "tcp"
        return f"{scheme}://127.0.0.1:{self.scheduler_port}"

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        ca, cert, key = self.tls
        return ["--protocol", "tls", "--tls-ca-file", os.fspath(ca), "--tls-cert",
                os.fspath(cert), "--tls-key", os.fspath(key)]

    def client_env(self) -> dict[str, str]:
        """The environment a Dask client needs to reach this cluster (its TLS settings)."""
        if self.tls is None:
            return {}
        ca, cert, key = self.tls
        return {
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": os.fspath(ca),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": os.fspath(cert),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": os.fspath(key),
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        }

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115 (the process writes it)
        with log:
            self.processes[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})}, start_new_session=True,
            )

    def start_scheduler(
        self, *, worker_saturation: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        """``worker_saturation``: the scheduler's ``distributed.scheduler.worker-saturation``
        (``inf``: every ready task goes to a worker at once; None: Dask's default);
        ``env``: more of its environment (Dask's configuration)."""
        self.scheduler_port = free_port()
        env = dict(env or {})
        if worker_saturation is not None:
            env["DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION"] = worker_saturation
        self._start("scheduler", [
            os.fspath(DASK), "scheduler", "--host", "127.0.0.1",
            "--port", str(self.scheduler_port), "--dashboard-address", "127.0.0.1:0",
            *self._tls_args(),
        ], env)

    def start_worker(
        self, name: str, *, nthreads: int = 2, executors: str | None = None
    ) -> Path:
        """Start worker ``name``; its state dir (``REPEATR_CACHE``) is returned."""
        state = self.base / name / "state"
        scratch = self.base / name / "dask"
        state.mkdir(parents=True, exist_ok=True)
        scratch.mkdir(parents=True, exist_ok=True)
        argv = [
            os.fspath(DASK), "worker", self.address, "--name", name,
            "--host", "127.0.0.1", "--nthreads", str(nthreads), "--no-dashboard",
            "--local-directory", os.fspath(scratch), "--preload", "repeatr.distributed",
            *self._tls_args(),
        ]
        if executors is not None:
            argv += ["--repeatr-executors", executors]
        self._start(name, argv, {"REPEATR_CACHE": os.fspath(state)})
        return state

    def log(self, name: str) -> str:
        path = self.base / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_workers(self, names: list[str], timeout: float = 90) -> dict[str, str]:
        """Worker name -> its address, once every one of ``names`` is registered."""
        from distributed import Client
        from distributed.security import Security

        security = None
        if self.tls is not None:
            ca, cert, key = self.tls
            security = Security(tls_ca_file=os.fspath(ca), tls_client_cert=os.fspath(cert),
                                tls_client_key=os.fspath(key), require_encryption=True)
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.log(name)}")
            try:
                with Client(self.address, timeout=5, security=security) as client:
                    while time.monotonic() < deadline:
                        workers = client.scheduler_info(n_workers=-1)["workers"]
                        by_name = {w["name"]: addr for addr, w in workers.items()}
                        if all(n in by_name for n in names):
                            return by_name
                        time.sleep(0.2)
            except OSError:
                pass
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{self.log(n)}" for n in self.processes)
                raise RuntimeError(f"workers {names} did not register:\n{logs}")
            time.sleep(0.2)

    def worker_pid(self, name: str) -> int:
        """The worker process (the nanny's child, spawned by multiprocessing) of worker ``name``."""
        nanny = self.processes[name].pid
        for pid in descendants(nanny):
            if "multiprocessing.spawn" in " ".join(command_line(pid)):
                return pid
        raise RuntimeError(f"worker {name} has no worker process under its nanny {nanny}")

    def stop(self) -> None:
        """SIGKILL every session of the cluster and wait until each is empty."""
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.processes.values():
            proc.wait()
            deadline = time.monotonic() + 30
            while (left := session_pids(proc.pid)) and time.monotonic() < deadline:
                for pid in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
        self.processes.clear()
