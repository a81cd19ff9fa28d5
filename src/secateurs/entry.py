"""The `secateurs` command: Ctrl-C handling first, then the command line.

Loading torch and transformers takes seconds; an interrupt while they load is one line and exit
status 130, like an interrupt at any later moment (handled in cli.main).
"""

import sys

INTERRUPTED = "interrupted: finished results are kept; run the same command again to resume"


def main() -> None:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
    cli_main()
