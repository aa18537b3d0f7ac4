"""The command line imports what a command needs when it runs it: loading `starter.py` and
building its parser (what `--help` does) leaves the Claude SDK and Temporal unimported. How fast
it starts is bench/cli_startup.py's to measure."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

# Run in a fresh interpreter: this test process has imported everything already.
BUILD_THE_PARSER = """
import json, sys
import typer.main
import starter
typer.main.get_command(starter.app)
print(json.dumps(sorted(sys.modules)))
"""


def test_loading_the_command_line_and_its_parser_imports_neither_the_claude_sdk_nor_temporal() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BUILD_THE_PARSER], check=True, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    imported = json.loads(result.stdout)

    heavy = [name for name in imported if name.split(".")[0] in ("anthropic", "temporalio")]
    assert heavy == []
    # Each used by one command (watch, review show), not by status or --help.
    assert "rich.progress" not in imported and "brightrun.storage" not in imported
    assert "starter" in imported  # the check ran after the command line loaded
