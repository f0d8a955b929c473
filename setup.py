"""The one compiled module: the job's start (``repeatr/linux/_jobstart.c``).

Everything else is in pyproject.toml. Needs gcc and the Python headers
(Debian: gcc, libc6-dev, python3-dev; ``scripts/setup`` installs them).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "repeatr.linux._jobstart",
            sources=["repeatr/linux/_jobstart.c"],
            extra_compile_args=["-Wall", "-Wextra", "-Werror", "-std=gnu11"],
        )
    ]
)
