"""``aiotmc gateway --demo``: simulated instruments, a local SQLite file, the dashboard.

:data:`DEMO_CONFIG` is ``examples/gateway/demo.toml`` (a test keeps them equal). When
the web part is installed and offers a demo (``aiotmc.gateway.web.demo_section()``
returning TOML text for ``[web]`` and ``[[users]]`` and a line telling the user where to
log in), it is appended, so the demo also serves the dashboard; nothing else (no broker,
no database server) is needed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Final

from .config import GatewayConfig, parse_config

__all__ = ["DEMO_CONFIG", "demo_config", "demo_text", "web_demo"]

DEMO_CONFIG: Final = """\
# aiotmc gateway --demo runs this configuration (with data_dir set to a fresh directory).
# Three simulated instruments (in-process, SIM::), readings into a local SQLite file.
# Try: aiotmc gateway --check examples/gateway/demo.toml
#      aiotmc gateway examples/gateway/demo.toml

[gateway]
site = "demo"
# host defaults to this machine's name, id to the host
data_dir = "demo-data"          # relative to this file

[[instruments]]
name = "dmm"
resource = "SIM::dmm"
tags = { room = "lab-1" }

  [[instruments.channels]]
  name = "voltage"
  query = "MEAS:VOLT:DC?"
  unit = "V"
  period = 0.5

[[instruments]]
name = "psu"
resource = "SIM::psu"
setup = ["APPL 5.0,0.5", "OUTP ON"]

  [[instruments.channels]]
  name = "voltage"
  query = "MEAS:VOLT?"
  unit = "V"
  period = 0.5

  [[instruments.channels]]
  name = "current"
  query = "MEAS:CURR?"
  unit = "A"
  period = 0.5

  [[instruments.channels]]
  name = "output"
  query = "OUTP?"
  parse = "bool"
  period = 5

[[instruments]]
name = "wavegen"
resource = "SIM::wavegen"

  [[instruments.channels]]
  name = "frequency"
  query = "FREQ?"
  unit = "Hz"
  period = 5

# No [[sinks]]: readings go to data_dir/readings.sqlite.
"""


def web_demo() -> tuple[str, str]:
    """The web part's demo section and its banner, or ``("", "")`` without one."""
    try:
        web = importlib.import_module("aiotmc.gateway.web")
    except ImportError:
        return "", ""
    demo_section = getattr(web, "demo_section", None)
    if not callable(demo_section):
        return "", ""
    text, banner = demo_section()
    return str(text), str(banner)


def demo_text(data_dir: Path, web: str = "") -> str:
    """The demo configuration with ``data_dir`` set, and ``web`` (TOML) appended."""
    path = str(data_dir.resolve())
    quoted = f"'{path}'" if "'" not in path and "\n" not in path else _basic_string(path)
    text = DEMO_CONFIG.replace('data_dir = "demo-data"', f"data_dir = {quoted}", 1)
    return text + ("\n" + web if web else "")


def _basic_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def demo_config(data_dir: Path, *, web: bool = True) -> tuple[GatewayConfig, str]:
    """The demo, validated, keeping its files in ``data_dir``; and the line to print
    about the dashboard (empty without one). ``web=False`` leaves the dashboard out."""
    section, banner = web_demo() if web else ("", "")
    return parse_config(demo_text(data_dir, section), path="<demo>"), banner
