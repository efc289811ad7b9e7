"""``aiotmc gateway --demo``: simulated instruments, a local SQLite file, the dashboard.

:data:`DEMO_CONFIG` is ``examples/gateway/demo.toml`` (a test keeps them equal). When
the web part is installed and offers a demo section (``aiotmc.gateway.web.DEMO_CONFIG``,
TOML text for ``[web]`` and ``[[users]]``), it is appended, so the demo also serves the
dashboard; nothing else (no broker, no database server) is needed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Final

from .config import GatewayConfig, parse_config

__all__ = ["DEMO_CONFIG", "demo_config", "demo_text"]

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


def _web_section() -> str:
    try:
        web = importlib.import_module("aiotmc.gateway.web")
    except ImportError:
        return ""
    section = getattr(web, "DEMO_CONFIG", "")
    return section if isinstance(section, str) else ""


def demo_text(data_dir: Path) -> str:
    """The demo configuration with ``data_dir`` set (and the web section, if any)."""
    path = str(data_dir.resolve())
    quoted = f"'{path}'" if "'" not in path and "\n" not in path else _basic_string(path)
    text = DEMO_CONFIG.replace('data_dir = "demo-data"', f"data_dir = {quoted}", 1)
    web = _web_section()
    return text + ("\n" + web if web else "")


def _basic_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def demo_config(data_dir: Path) -> GatewayConfig:
    """The demo, validated, keeping its files in ``data_dir``."""
    return parse_config(demo_text(data_dir), path="<demo>")
