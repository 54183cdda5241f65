"""Container health check: exit 0 when GET /health/ready answers 200 (stdlib only, no curl).

Used by the image's HEALTHCHECK and by docker-compose; honours CONVZOO_PORT.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("CONVZOO_PORT", "8000")
    path = sys.argv[1] if len(sys.argv) > 1 else "/health/ready"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as error:
        print(f"{path}: HTTP {error.code}", file=sys.stderr)
    except OSError as error:
        print(f"{path}: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
