"""The parent <-> sandbox helper protocol: the job spec and every message, as types.

The sandbox server (``repeatr.executors.forkserver``, one per invocation)
forks the helpers: :class:`Fork` and :class:`Forked` are its messages, on its
own socket; each helper it forks then speaks the protocol below.

Both sides import this module (the parent, ``repeatr.executors.helper``; the
helper, ``repeatr.executors.sandbox`` and ``oci_sandbox``), so mypy checks
what one builds against what the other reads: no dict built in one process
and read by string keys in another.

Order on the control socket (frames of ``repeatr.executors.wire``):

1. parent -> helper: :class:`Spec`;
2. helper -> parent: :class:`Assembled` (the root is mounted), then
   :class:`Started` (the job's pid), then :class:`Exit`; or :class:`Error`
   instead of any of them, after which the helper exits;
3. parent -> helper, after :class:`Exit`: :class:`Done`, once the outputs are
   packed (they are read through ``/proc/<helper>/root``, so the mounts must
   live until then); the helper exits.

The parent closes its end of the socket when it is done with the helper (or
dies): the helper sees end of stream and kills the job. The helper never
closes the socket before its last message.

Not msgspec: importing it costs the helper ~50 ms (typing, inspect, uuid,
decimal, datetime), three times its whole start-up. :class:`Message` is the
smallest typed record that does: fields from the class annotations (strings,
never evaluated), a keyword-only ``__init__`` that refuses unknown and missing
fields, immutability, and a tagged dict form for ``marshal`` and JSON.
``dataclass_transform`` makes mypy check construction like a dataclass's.
"""

from __future__ import annotations

from enum import StrEnum  # no cost: ``signal`` imports enum anyway

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar, Literal, TypeVar, dataclass_transform

    M = TypeVar("M", bound="Message")
else:

    def dataclass_transform(**_kw: object) -> object:
        return lambda cls: cls


#: The key of a message's tag in its dict form (mount operations use "op").
TAG = "$"
#: Every message class by tag (filled as they are defined).
MESSAGES: dict[str, type[Message]] = {}


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Message:
    """An immutable typed record with a tagged dict form (see the module doc)."""

    tag: ClassVar[str] = ""
    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, object]] = {}
    #: Fields whose wire form (a plain value) is converted back by a callable.
    _decoders: ClassVar[dict[str, Callable[[Any], object]]] = {}

    def __init_subclass__(cls) -> None:
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            for name, hint in vars(klass).get("__annotations__", {}).items():
                if not str(hint).startswith("ClassVar") and name not in names:
                    names.append(name)
        cls._fields = tuple(names)
        cls._defaults = {n: getattr(cls, n) for n in names if hasattr(cls, n)}
        if cls.tag:
            MESSAGES[cls.tag] = cls

    def __init__(self, **values: object) -> None:
        unknown = [k for k in values if k not in self._fields]
        if unknown:
            raise TypeError(f"{self.tag}: unknown field(s) {', '.join(unknown)}")
        for name in self._fields:
            if name in values:
                object.__setattr__(self, name, values[name])
            elif name not in self._defaults:
                raise TypeError(f"{self.tag}: missing field {name}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, f) == getattr(other, f) for f in self._fields
        )

    def __hash__(self) -> int:
        return hash((type(self), *(repr(getattr(self, f)) for f in self._fields)))

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({args})"

    def to_wire(self) -> dict[str, Any]:
        """The tagged dict form: plain values only (marshal, or JSON but for bytes)."""
        out: dict[str, Any] = {TAG: self.tag}
        for name in self._fields:
            out[name] = _to_wire(getattr(self, name))
        return out


def _to_wire(value: object) -> object:
    if isinstance(value, Message):
        return value.to_wire()
    if isinstance(value, StrEnum):  # marshal takes exact types only
        return value.value
    if isinstance(value, list | tuple):
        return [_to_wire(v) for v in value]
    return value


def _from_wire(value: object) -> object:
    if isinstance(value, dict) and TAG in value:
        return from_wire(value)
    if isinstance(value, list):
        return [_from_wire(v) for v in value]
    return value


def from_wire(data: dict[str, Any]) -> Message:
    """The message ``data`` is the dict form of; ValueError if it is none."""
    cls = MESSAGES.get(data.get(TAG, ""))
    if cls is None:
        raise ValueError(f"not a message of the sandbox protocol: tag {data.get(TAG)!r}")
    values = {k: _from_wire(v) for k, v in data.items() if k != TAG}
    try:
        for name, decoder in cls._decoders.items():
            if name in values:
                values[name] = decoder(values[name])
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"malformed {cls.tag} message: {e}") from None


def expect(cls: type[M], data: dict[str, Any]) -> M:
    """``from_wire(data)``, which must be a ``cls``; ValueError otherwise."""
    msg = from_wire(data)
    if not isinstance(msg, cls):
        raise ValueError(f"expected a {cls.tag} message, got {msg.tag}")
    return msg


# --- the job spec (parent -> helper) -------------------------------------------
if TYPE_CHECKING:
    Mode = Literal["ns", "chroot", "oci", "vm"]


class NetworkPolicy(StrEnum):
    """``action.network`` in a formula: the one name of a job's network, from
    the formula through ``repeatr.net`` and the executors to the helper."""

    NONE = "none"  # a network namespace of its own, loopback only
    HOST = "host"  # the host's network namespace
    BRIDGE = "bridge"  # a namespace repeatr.net prepared, on its bridge

    @classmethod
    def parse(cls, text: str) -> NetworkPolicy:
        try:
            return cls(text)
        except ValueError:
            from repeatr.errors import UsageError

            choices = ", ".join(p.value for p in cls)
            raise UsageError(
                f"unknown network policy {text!r}: expected one of {choices}"
            ) from None


class JobNetwork(Message):
    """The job's network: its policy and, for ``bridge``, the namespace to join
    (an nsfs path ``repeatr.net`` prepared)."""

    tag = "network"
    _decoders: ClassVar[dict[str, Callable[[Any], object]]] = {"policy": NetworkPolicy}
    policy: NetworkPolicy = NetworkPolicy.NONE
    netns: str | None = None

    @property
    def own_namespace(self) -> bool:
        """The job runs in a network namespace that is not the host's."""
        return self.policy is not NetworkPolicy.HOST


class JobLimits(Message):
    """Limits, normalised (memory and disk in bytes, cpu in cores, timeout in seconds)."""

    tag = "limits"
    memory: int | None = None
    pids: int | None = None
    cpu: float | None = None
    timeout: float | None = None
    disk: int | None = None

    def cgroup(self) -> dict[str, int | float]:
        """What the run's cgroup enforces (``repeatr.linux.cgroups.Group.create``)."""
        wanted = {"memory": self.memory, "pids": self.pids, "cpu": self.cpu}
        return {k: v for k, v in wanted.items() if v is not None}


class OciCommands(Message):
    """The OCI runtime's command lines and files (``oci`` mode, ``oci_sandbox``)."""

    tag = "oci"
    name: str
    bundle: str  # the dir of config.json: the helper makes it and writes ``config``
    #: The bundle's ``config.json``, as text: in the spec, so a spec saved from
    #: ``--debug`` replays after the run (and its bundle) is gone.
    config: str
    style: Literal["create", "run"]
    create: list[str]
    start: list[str]
    run: list[str]
    delete: list[str]
    state: str
    log: str
    pid_file: str
    cgroup: str
    hide_cgroup2: bool = False


class VmCommands(Message):
    """The VM's processes and files (``vm`` mode, ``repeatr.executors.vm_sandbox``).

    qemu inherits the status port's pipe and the job's stdout and stderr as
    its fds 3, 4 and 5 (``repeatr.vm.qemu``); ``initrd`` is the base
    initramfs with the job's data appended, to which the helper appends the
    exec it found in the root.
    """

    tag = "vm"
    qemu: list[str]
    virtiofsd: list[str]
    dir: str  # the run's VM dir: qemu's and virtiofsd's cwd
    socket: str  # virtiofsd's, relative to ``dir`` (a unix socket path has 108 bytes at most)
    initrd: str
    console: str  # the guest kernel's console log
    log: str  # qemu's and virtiofsd's own stderr
    boot_timeout: float  # seconds for the guest to report "booted"
    #: A bridge network: the tap qemu attaches to, made by the helper in the run's namespace.
    tap: str | None = None


class Spec(Message):
    """One job for the helper: what to assemble, what to run in it, how."""

    tag = "spec"
    mode: Mode
    root: str
    #: Mount operations in ``Op.to_json`` form: planned mounts, then the late ones.
    mounts: list[dict[str, Any]]
    #: Cradle steps (``Mkdir``), ``Op.to_json`` form.
    cradle: list[dict[str, Any]]
    argv: list[str]
    env: list[list[str]]  # [name, value] pairs, in the job's order
    cwd: str = "/"
    uid: int = 1000
    gid: int = 1000
    hostname: str | None = None
    capabilities: list[str]
    network: JobNetwork
    interactive: bool = False
    limits: JobLimits
    rw: str  # the writable layers' dir (limits.disk mounts its filesystem here)
    cgroup: str  # the run's cgroup (and OCI container) name
    seccomp: bytes | None = None  # BPF program the job installs (ns, chroot)
    outputs: list[str]
    #: Where the OCI runtime mounts in the root (made first, removed before packing).
    mountpoints: list[str]
    oci: OciCommands | None = None
    vm: VmCommands | None = None


# --- the helper's reports (helper -> parent) and the parent's last word -------------
class Assembled(Message):
    tag = "assembled"
    pid: int  # the helper's


class Started(Message):
    tag = "started"
    pid: int  # the job's (the container's init, for OCI runtimes)


class Exit(Message):
    tag = "exit"
    code: int  # 128+N for signal N
    signal: int | None
    timed_out: bool = False
    oom: bool = False
    #: "limit": limits.disk was used up; "reserve": killed at the host disk's reserve.
    disk: str = ""


class Error(Message):
    """The job could not run (or the helper failed): ``category`` names a
    ``repeatr.errors.Category``."""

    tag = "error"
    category: str
    message: str
    hint: str | None = None
    traceback: str | None = None


class Done(Message):
    """Parent -> helper, after :class:`Exit`: outputs are packed, tear down."""

    tag = "done"


if TYPE_CHECKING:
    Report = Assembled | Started | Exit | Error


# --- the sandbox server (``repeatr.executors.forkserver``) ---------------------------
class Fork(Message):
    """Parent -> server: fork a sandbox helper for one job.

    Sent as one packet on the server's SOCK_SEQPACKET socket with four file
    descriptors (SCM_RIGHTS), in this order: the helper's end of a fresh
    control socketpair (the parent then speaks the protocol above on the
    other end: :class:`Spec` first), and the helper's stdin, stdout and
    stderr (the job's: pipes the parent reads, or the terminal of an
    interactive job). The server closes its copies once the helper has them.

    ``last``: the parent will ask for no other helper (a single run's one
    job). A server with no helper running then becomes this job's helper
    itself instead of forking one (its :class:`Forked` names its own pid):
    one fork and one process fewer.
    """

    tag = "fork"
    last: bool = False


class Forked(Message):
    """Server -> parent, answering :class:`Fork`: the helper runs.

    Sent with one file descriptor, a pidfd of the helper: the parent waits on
    it and signals the helper through it (it is the server's child, not the
    parent's, so a bare pid could be reused once the server reaps it). For a
    ``last`` fork the helper may be the server itself, the parent's child.
    """

    tag = "forked"
    pid: int  # the helper's


# --- JSON (--debug and --spec FILE): bytes as {"$bytes": hex} ------------------------
def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    raise TypeError(f"{type(value).__name__} in a sandbox spec")


def _json_hook(d: dict[str, Any]) -> object:
    if set(d) == {"$bytes"}:
        return bytes.fromhex(d["$bytes"])
    return d


def spec_to_json(spec: Spec) -> str:
    """One line (``--debug`` prints it as one: easy to cut out, ``jq`` formats it)."""
    import json

    return json.dumps(spec.to_wire(), default=_json_default)


def spec_from_json(text: str) -> Spec:
    """The spec ``spec_to_json`` wrote; ValueError if ``text`` is not one."""
    import json

    hook: Callable[[dict[str, Any]], object] = _json_hook
    data = json.loads(text, object_hook=hook)
    if not isinstance(data, dict):
        raise ValueError("a sandbox spec is a JSON object")
    return expect(Spec, data)
