"""The ``planlock`` command line: a thin Typer + Rich layer over the library (top layer).

Each command module registers its commands on the one Typer ``app`` in ``_app``; importing this
package imports them all, in the order ``planlock --help`` lists them.
"""

from planlock.cli import _journal, _main, _queue  # noqa: F401  (each registers its commands)

# isort: split
from planlock.cli import _runs  # noqa: F401

# isort: split
from planlock.cli import _endorse  # noqa: F401

# isort: split
from planlock.cli import _plan  # noqa: F401

# isort: split
from planlock.cli import _bench, _serve  # noqa: F401

# isort: split
from planlock.cli import _durable  # noqa: F401
from planlock.cli._app import app
from planlock.cli._main import main

__all__ = ["app", "main"]
