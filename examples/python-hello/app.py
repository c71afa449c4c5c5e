"""A pitstop service in Python: the `service` world of wit/platform.wit.

componentize-py generates the `wit_world` bindings at build time (build.sh);
this module provides the export, a class named after the interface.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import keyvalue, log
from wit_world.imports.types import Header, Request, Response


def text(status: int, body: str) -> Response:
    return Response(
        status=status,
        headers=[Header(name="content-type", value="text/plain; charset=utf-8")],
        body=body.encode("utf-8"),
    )


class Handler(exports.Handler):
    def handle(self, request: Request) -> Response:
        # The gateway hands over the full path, route prefix included
        # (/py/hello): match what follows the prefix, so the service answers
        # under whichever prefix it is routed at.
        method, rest = request.method, "/".join(request.path.split("/")[2:])
        if rest == "hello":
            if method != "GET":
                return text(405, "method not allowed\n")
            return text(200, "hello from python")
        if rest == "count":
            try:
                if method == "POST":
                    # Atomic, in this component's own keyspace.
                    value = keyvalue.increment("count", 1)
                    log.log(log.Level.INFO, f"count is now {value}")
                elif method == "GET":
                    stored = keyvalue.get("count")
                    value = int(stored.decode()) if stored is not None else 0
                else:
                    return text(405, "method not allowed\n")
            except Err as e:
                return text(500, f"keyvalue failed: {e.value}\n")
            return text(200, f"{value}\n")
        return text(404, "not found\n")
