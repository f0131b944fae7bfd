"""Imports every command module so that each registers itself on the app."""
from edgeq.cli import cmd_convert, cmd_eval, cmd_inspect  # noqa: F401
from edgeq.cli import cmd_bench, cmd_compare, cmd_targets  # noqa: F401
from edgeq.cli import cmd_qat  # noqa: F401
from edgeq.cli import cmd_analyze  # noqa: F401
