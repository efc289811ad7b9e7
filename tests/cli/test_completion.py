"""``aiotmc completion bash|zsh``: the generated script, driven by a real bash."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from aiotmc.cli import main
from aiotmc.cli._completion import script
from aiotmc.cli._parser import build_parser

BASH = shutil.which("bash")


def _complete(words: list[str]) -> list[str]:
    """What the script offers for the last of ``words`` (bash's COMP_WORDS protocol)."""
    assert BASH is not None
    array = " ".join(f"'{w}'" for w in words)
    program = (
        f"{script(build_parser(), 'bash')}\n"
        f"COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; _aiotmc\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        [BASH, "--norc", "--noprofile"],
        input=program,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.split()


@pytest.mark.skipif(BASH is None, reason="bash not installed")
def test_bash_completes_commands_options_and_choices() -> None:
    assert _complete(["aiotmc", "re"]) == ["read-block"]
    assert "--timeout" in _complete(["aiotmc", "--"])
    assert _complete(["aiotmc", "read-block", "--max"]) == ["--max-size"]
    assert _complete(["aiotmc", "--timeout", "5", "read-block", "--pro"]) == ["--progress"]
    assert _complete(["aiotmc", "--backend", "t"]) == ["trio"]
    assert _complete(["aiotmc", "completion", "z"]) == ["zsh"]
    assert _complete(["aiotmc", "--timeout", ""]) == []  # a value is typed, not offered


def test_the_zsh_script_loads_bash_completion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "zsh"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    assert "complete -o default -F _aiotmc aiotmc" in out
