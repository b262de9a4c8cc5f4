"""`python -m exporter.simulator`, unchanged, but without a log line for every request.

The simulator logs at INFO, and aiohttp's access log then writes a line per request: at the
thousands of polls a second a benchmark makes, that is simulator CPU the anchors would be
measured against, and hundreds of MB of log. Logging configured first (at WARNING) makes the
simulator's own `basicConfig` a no-op; its warnings and errors still reach the log.
"""

from __future__ import annotations

import logging

from exporter.simulator.__main__ import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    main()
