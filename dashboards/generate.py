"""Write the committed monitoring files from Python: `python -m dashboards.generate`.

The committed JSON and YAML are what users import; tests regenerate them and fail on any
difference, so the files and this code cannot drift apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dashboards.dashboard import build_dashboard
from dashboards.rules import rules_text

HERE = Path(__file__).resolve().parent
DASHBOARD_FILE = HERE / "cloudjob-exporter.json"
RULES_FILE = HERE / "cloudjob-exporter.rules.yaml"


def dashboard_text() -> str:
    return json.dumps(build_dashboard(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    DASHBOARD_FILE.write_text(dashboard_text(), encoding="utf-8")
    RULES_FILE.write_text(rules_text(), encoding="utf-8")
    print(f"wrote {DASHBOARD_FILE.name} and {RULES_FILE.name}")  # noqa: T201 - CLI output
    return 0


if __name__ == "__main__":
    sys.exit(main())
