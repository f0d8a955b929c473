"""choose(): the requested executor, or the best one that can run the job, with reasons."""

from __future__ import annotations

import pytest

from repeatr.errors import Category, ExecutorError
from repeatr.executors.base import (
    NAMESPACES,
    Capabilities,
    Executor,
    ExecutorName,
    Isolation,
    load,
)
from repeatr.executors.choose import AUTO_ORDER, Needs, choose
from repeatr.model.limits import LimitName

pytestmark = pytest.mark.root


class Unavailable(Executor):
    """A real executor's capabilities, but preflight fails (as on a host without it)."""

    def __init__(self, real: Executor) -> None:
        self.real = real
        self.name = real.name

    def capabilities(self) -> Capabilities:
        return self.real.capabilities()

    def preflight(self) -> None:
        raise ExecutorError(f"{self.name} is not installed", hint="install it")

    async def run(self, *a: object, **kw: object) -> object:  # type: ignore[override]
        raise AssertionError("never run")


def reasons_by_name(reasons: list[str]) -> dict[str, str]:
    return {r.split(":", 1)[0]: r.split(":", 1)[1].strip() for r in reasons}


def test_auto_prefers_ns_and_says_why_not_the_others() -> None:
    chosen, reasons = choose()
    assert chosen == ExecutorName.NS
    why = reasons_by_name(reasons)
    assert set(why) == {n.value for n in ExecutorName} - {"ns"}
    assert "only when asked" in why["gvisor"]


def test_auto_skips_an_unavailable_executor() -> None:
    def make(name: ExecutorName) -> Executor:
        ex = load(name)()
        return Unavailable(ex) if name == ExecutorName.NS else ex

    chosen, reasons = choose(make=make)
    assert chosen == ExecutorName.CRUN
    assert "unavailable" in reasons_by_name(reasons)["ns"]


def test_auto_skips_executors_that_cannot_enforce_a_limit() -> None:
    def make(name: ExecutorName) -> Executor:
        ex = load(name)()
        return ex if name == ExecutorName.GVISOR else Unavailable(ex)

    with pytest.raises(ExecutorError) as info:
        choose(needs=Needs(limits=frozenset({LimitName.MEMORY})), make=make)
    assert info.value.category == Category.EXECUTOR


def test_network_none_rules_out_chroot() -> None:
    def make(name: ExecutorName) -> Executor:
        ex = load(name)()
        return ex if name == ExecutorName.CHROOT else Unavailable(ex)

    with pytest.raises(ExecutorError):
        choose(needs=Needs(network="none"), make=make)
    chosen, _ = choose(needs=Needs(network="host"), make=make)
    assert chosen == ExecutorName.CHROOT


def test_user_space_kernel_needs_gvisor() -> None:
    chosen, reasons = choose(needs=Needs(user_space_kernel=True))
    assert chosen == ExecutorName.GVISOR
    assert all("gvisor" not in r.split(":")[0] for r in reasons)


def test_requested_executor() -> None:
    assert choose("runc")[0] == ExecutorName.RUNC
    with pytest.raises(ExecutorError):
        choose("gvisor", Needs(limits=frozenset({LimitName.PIDS})))
    with pytest.raises(ExecutorError):
        choose("docker")


def test_order_is_isolation_then_speed() -> None:
    caps = [load(n)().capabilities() for n in AUTO_ORDER]
    assert caps[0].isolates == NAMESPACES
    assert caps[-1].isolates < NAMESPACES  # chroot: the host's network and hostname
    assert Isolation.NET not in caps[-1].isolates
