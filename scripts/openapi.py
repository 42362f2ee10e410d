"""Write docs/openapi.json from the code (tests/test_server.py checks that it is current)."""

import sys
from pathlib import Path

from planlock.server._app import openapi_document

target = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
target.write_text(openapi_document(), encoding="utf-8")
sys.stdout.write(f"wrote {target}\n")
