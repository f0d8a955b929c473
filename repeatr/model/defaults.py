"""The cradle's formula defaults: what a minimal formula means, applied before hashing.

Follows the original's ``FormulaDefaults`` (polydawn/repeatr,
``executor/cradle/cradle.go``) step by step:

1. userinfo is always filled in; uid and gid default to 1000 (even with the
   cradle disabled).
2. An empty cwd becomes ``/`` with ``cradle: "disable"``, else ``/task``.
3. With the cradle disabled, stop here: no username, homedir or env.
4. username: ``root`` for uid 0, else ``reuser``; homedir: ``/root`` for uid 0,
   else ``/home/<username>`` (the *final* username, so a given username moves
   the default home).
5. env gets ``HOME`` (the homedir), ``USER`` (the username) and ``PATH`` only
   where the key is absent; a key present with an empty value is kept.

The formula ID is computed on the result, so these values are part of every
published ID and must not change.
"""

from __future__ import annotations

import msgspec

from repeatr.model.formula import Formula, UserInfo

DEFAULT_UID = 1000
DEFAULT_GID = 1000
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CRADLE_CWD = "/task"
BARE_CWD = "/"


def apply_defaults(frm: Formula) -> Formula:
    """A new formula with the cradle defaults filled in; ``frm`` is not changed."""
    action = frm.action
    user = action.userinfo or UserInfo()
    uid = DEFAULT_UID if user.uid is None else user.uid
    gid = DEFAULT_GID if user.gid is None else user.gid
    user = msgspec.structs.replace(user, uid=uid, gid=gid)
    disabled = action.cradle == "disable"
    cwd = action.cwd or (BARE_CWD if disabled else CRADLE_CWD)
    if disabled:
        action = msgspec.structs.replace(action, userinfo=user, cwd=cwd)
        return msgspec.structs.replace(frm, action=action)

    username = user.username or ("root" if uid == 0 else "reuser")
    homedir = user.homedir or ("/root" if uid == 0 else f"/home/{username}")
    user = msgspec.structs.replace(user, username=username, homedir=homedir)
    env = dict(action.env or {})
    env.setdefault("HOME", homedir)
    env.setdefault("USER", username)
    env.setdefault("PATH", DEFAULT_PATH)
    action = msgspec.structs.replace(action, userinfo=user, cwd=cwd, env=env)
    return msgspec.structs.replace(frm, action=action)
