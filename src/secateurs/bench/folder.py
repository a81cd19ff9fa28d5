"""The bench's output folder: written only if it is new, empty, or an earlier bench's (which it then
resumes). A manifest (MANIFEST) marks the folders a bench wrote; a folder without it that holds
anything is the user's, and is refused untouched, before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from ..errors import SecateursError

MANIFEST = "secateurs-bench.json"


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_ours(folder: Path) -> bool:
    manifest = _json(folder / MANIFEST)
    if isinstance(manifest, dict) and manifest.get("written_by") == "secateurs bench":
        return True
    summary = _json(folder / "summary.json")  # a bench's from before the manifest
    return isinstance(summary, dict) and {"setting", "cells", "bootstrap_resamples"} <= set(summary)


def check_folder(folder: Path) -> None:
    """Refuse, in one line, an output that is a file or a folder of someone else's files."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SecateursError(f"bench output {str(folder)!r} is a file; the bench writes a folder (results, "
                             "summary, plots, report): give a new or empty folder")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SecateursError(f"cannot write bench output {str(folder)!r}: {str(parent)!r} is a file")
            break
    if folder.is_dir():
        try:
            entries = sorted(p.name for p in folder.iterdir())
        except OSError as e:
            raise SecateursError(f"cannot read bench output folder {str(folder)!r}: {e.strerror}") from None
        if entries and not _is_ours(folder):
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise SecateursError(f"bench output folder {str(folder)!r} holds files a bench did not write ({shown}); "
                                 "refusing to overwrite them: give a new or empty folder")


def claim_folder(folder: Path, command: str = "") -> None:
    """Check the folder and mark it as the bench's (so the same command resumes in it)."""
    folder = Path(folder)
    check_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        manifest = folder / MANIFEST
        if not manifest.exists():
            manifest.write_text(json.dumps({"written_by": "secateurs bench", "secateurs": __version__,
                                            "command": command}, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        raise SecateursError(f"cannot write bench output folder {str(folder)!r}: {e.strerror or e}") from None
