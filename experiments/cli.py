"""The `gavel` command.

gavel run [OVERRIDES...] [--multirun]   run an experiment (Hydra overrides, e.g. attack=square access.budget=100)
gavel options                           list the options of every config group
"""

from __future__ import annotations

import logging
import sys

from experiments.config import GROUPS, group_options
from experiments.validation import check_overrides, config_errors_exit

USAGE = __doc__.strip()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "options":
        for group in GROUPS:
            print(f"{group}: {', '.join(group_options(group))}")
        return
    if command != "run":
        print(f"gavel: unknown command {command!r}; allowed: run, options\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    logging.getLogger("art").setLevel(logging.WARNING)  # ART logs every attack's progress at INFO
    with config_errors_exit():
        check_overrides(rest)
    from experiments.run import main as hydra_main

    sys.argv = ["gavel run", *rest]
    hydra_main()


if __name__ == "__main__":
    main()
