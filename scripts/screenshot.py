"""Write docs/approval-page.png: the browser test's scenario, with a screenshot at the end.

    .venv/bin/python scripts/screenshot.py [OUT.png]

Needs Chromium at /usr/bin/chromium (or $PLANLOCK_CHROMIUM) and Playwright's Python package.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_server_browser import approve_in_the_page  # noqa: E402
from test_server_support import serve  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "approval-page.png"
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp)) as server:
        approve_in_the_page(server.url, screenshot=out)
    sys.stdout.write(f"wrote {out}\n")


if __name__ == "__main__":
    main()
