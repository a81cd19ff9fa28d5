"""Run the `secateurs` command in-process as a user would: (exit status, stderr)."""

import sys

from secateurs.cli import main


def run_main(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["secateurs", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    return code, capsys.readouterr().err
