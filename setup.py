"""The compiled modules: the job's start (``repeatr/linux/_jobstart.c``) and the
kernel calls of ``repeatr.linux.libc`` (``repeatr/linux/_libc.c``: no ctypes in a run).

Everything else is in pyproject.toml. Needs gcc and the Python headers
(Debian: gcc, libc6-dev, python3-dev; ``scripts/setup`` installs them).
"""

from setuptools import Extension, setup

_FLAGS = ["-Wall", "-Wextra", "-Werror", "-std=gnu11"]

setup(
    ext_modules=[
        Extension(
            "repeatr.linux._jobstart",
            sources=["repeatr/linux/_jobstart.c"],
            extra_compile_args=_FLAGS,
        ),
        Extension(
            "repeatr.linux._libc",
            sources=["repeatr/linux/_libc.c"],
            extra_compile_args=_FLAGS,
        ),
    ]
)
