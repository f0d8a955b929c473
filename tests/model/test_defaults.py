"""The cradle's defaults (spec/compat.md "Defaults"; the original's FormulaDefaults)."""

from __future__ import annotations

from repeatr.model.defaults import DEFAULT_PATH, apply_defaults
from repeatr.model.formula import Action, Formula, UserInfo


def _formula(**action: object) -> Formula:
    return Formula(action=Action(exec=("/bin/true",), **action))  # type: ignore[arg-type]


def test_cradle_defaults() -> None:
    action = apply_defaults(_formula()).action
    assert action.userinfo == UserInfo(
        uid=1000, gid=1000, username="reuser", homedir="/home/reuser"
    )
    assert action.cwd == "/task"
    assert action.env == {"HOME": "/home/reuser", "USER": "reuser", "PATH": DEFAULT_PATH}


def test_uid_zero_is_root() -> None:
    action = apply_defaults(_formula(userinfo=UserInfo(uid=0))).action
    assert action.userinfo == UserInfo(uid=0, gid=1000, username="root", homedir="/root")
    assert action.env is not None
    assert (action.env["HOME"], action.env["USER"]) == ("/root", "root")


def test_given_username_moves_default_home() -> None:
    action = apply_defaults(_formula(userinfo=UserInfo(username="ada"))).action
    assert action.userinfo is not None
    assert action.userinfo.homedir == "/home/ada"
    assert action.env is not None
    assert action.env["USER"] == "ada"


def test_present_env_keys_win_even_when_empty() -> None:
    action = apply_defaults(_formula(env={"PATH": "/opt/bin", "HOME": ""})).action
    assert action.env == {"PATH": "/opt/bin", "HOME": "", "USER": "reuser"}


def test_given_values_are_kept() -> None:
    user = UserInfo(uid=5, gid=6, username="u", homedir="/h")
    action = apply_defaults(_formula(cwd="/src", userinfo=user)).action
    assert action.userinfo == user
    assert action.cwd == "/src"


def test_cradle_disabled_sets_only_ids_and_cwd() -> None:
    action = apply_defaults(_formula(cradle="disable")).action
    assert action.userinfo == UserInfo(uid=1000, gid=1000)
    assert action.cwd == "/"
    assert action.env is None
    kept = apply_defaults(_formula(cradle="disable", env={"A": "1"}, cwd="/w")).action
    assert kept.env == {"A": "1"}
    assert kept.cwd == "/w"


def test_defaults_are_idempotent_and_do_not_mutate() -> None:
    original = _formula(env={"A": "1"})
    once = apply_defaults(original)
    assert apply_defaults(once) == once
    assert original.action.env == {"A": "1"}
    assert original.action.userinfo is None
