"""Line numbers by key path, through TOML's tricky corners (strings, arrays, comments)."""

from __future__ import annotations

import tomllib

from aiotmc.gateway._toml_lines import LineMap

TEXT = '''\
# [[instruments]] in a comment is not a header
title = """
[[instruments]]
name = "inside a string"
"""
[gateway]   # trailing comment [x]
site = 'a#b'
"quoted key" = 1
dotted.key = 2

[[instruments]]
name = "one"
setup = [
  "*CLS",   # [[instruments]]
  "*SRE 32",
]
tags = { room = "b12", rack = "[[x]]" }

  [[instruments.channels]]
  name = "c0"

  [[instruments.channels]]
  name = "c1"
  query = 'MEAS:VOLT?'

[instruments.options]
read_termination = "\\n"

[[instruments]]
name = "two"
  [[instruments.channels]]
  name = "d0"
'''


def test_lines_of_headers_keys_and_array_elements() -> None:
    tomllib.loads(TEXT)  # it is valid TOML
    lines = LineMap(TEXT)
    at = {line.strip(): i for i, line in enumerate(TEXT.splitlines(), 1)}
    assert lines.find(("title",)) == 2
    assert lines.find(("gateway",)) == 6
    assert lines.find(("gateway", "site")) == at["site = 'a#b'"]
    assert lines.find(("gateway", "quoted key")) == at['"quoted key" = 1']
    assert lines.find(("gateway", "dotted", "key")) == at["dotted.key = 2"]
    assert lines.find(("instruments", 0)) == 11
    assert lines.find(("instruments", 0, "name")) == 12
    assert lines.find(("instruments", 0, "setup", 1)) == 13  # inside an array: its key
    assert (
        lines.find(("instruments", 0, "tags", "room"))
        == at['tags = { room = "b12", rack = "[[x]]" }']
    )
    assert lines.find(("instruments", 0, "channels", 0)) == 19
    assert lines.find(("instruments", 0, "channels", 1, "query")) == 24
    assert lines.find(("instruments", 0, "options", "read_termination")) == 27
    assert lines.find(("instruments", 1)) == 29
    assert lines.find(("instruments", 1, "channels", 0, "name")) == 32
    assert lines.find(("instruments", 1, "channels", 0, "period")) == 31  # missing: its table
    assert lines.find(("nowhere",)) is None
