"""The Python peer `scim2-server` (PyPI) served as its ASGI app under uvicorn.

Used by the benchmark (bench/run_bench.py) and by the conformance harness
(tests/conformance/run_conformance.py --peer) so both compare against the same
thing. It behaves like `scim-operator serve` as far as the harnesses care:

    python bench/peer_app.py [--listen 127.0.0.1:0]

binds the address (port 0 = any free port), prints
`SCIM base URL: http://HOST:PORT/v2` on stdout, and serves the default
RFC 7643 schemas/resource types from memory (AsyncInMemoryStorage), one
process, one worker, uvloop + httptools when installed (uvicorn[standard]).
If the env var SCIM_TOKEN is set, every request except
/ServiceProviderConfig needs `Authorization: Bearer $SCIM_TOKEN`, exactly
like scim2-server's own `--bearer-token` (its built-in dev server is a
wsgiref server that closes every connection, so it is not used here).
"""

import argparse
import os
import socket
import sys

import uvicorn
from scim2_models import UnauthorizedException
from scim2_models import ScimProvider
from scim2_server.applications.asgi import ASGIApplication
from scim2_server.memory import AsyncInMemoryStorage
from scim2_server.testserver.application import BEARER_TOKEN_SCHEME
from scim2_server.utils import load_default_resource_types
from scim2_server.utils import load_default_schemas
from scim2_server.utils import load_default_service_provider_config


class BearerASGIApplication(ASGIApplication):
    def __init__(self, *args, bearer_tokens=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.bearer_tokens = set(bearer_tokens)

    def check_auth(self, request):
        if not self.bearer_tokens:
            return
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token not in self.bearer_tokens:
            raise UnauthorizedException


def make_app(token: str | None) -> ASGIApplication:
    config = load_default_service_provider_config()
    if token:
        config.authentication_schemes = [
            *(config.authentication_schemes or []),
            BEARER_TOKEN_SCHEME,
        ]
    provider = ScimProvider.from_discovery(
        load_default_schemas().values(),
        load_default_resource_types().values(),
        config=config,
    )
    return BearerASGIApplication(
        AsyncInMemoryStorage(),
        provider,
        bearer_tokens=[token] if token else [],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(1024)
    bound_host, bound_port = sock.getsockname()[:2]

    app = make_app(os.environ.get("SCIM_TOKEN") or None)
    config = uvicorn.Config(
        app,
        workers=1,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    print(f"SCIM base URL: http://{bound_host}:{bound_port}/v2", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
