"""Container health check: exit 0 when GET /health/ready answers 200 (stdlib only, no curl).

Used by the image's HEALTHCHECK and by docker-compose; honours CONVZOO_PORT, and CONVZOO_TLS_CERT_FILE
(HTTPS to this very process on loopback, so the certificate's names are not checked; with
CONVZOO_TLS_CLIENT_CA_FILE it presents the server's own certificate, which that CA must have signed).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("CONVZOO_PORT", "8000")
    path = sys.argv[1] if len(sys.argv) > 1 else "/health/ready"
    cert = os.environ.get("CONVZOO_TLS_CERT_FILE")
    context = None
    if cert:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # our own process, on loopback
        if os.environ.get("CONVZOO_TLS_CLIENT_CA_FILE"):
            context.load_cert_chain(cert, os.environ.get("CONVZOO_TLS_KEY_FILE"))
    url = f"{'https' if cert else 'http'}://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as error:
        print(f"{path}: HTTP {error.code}", file=sys.stderr)
    except OSError as error:
        print(f"{path}: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
