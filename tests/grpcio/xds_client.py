"""A proxyless gRPC (grpcio, PyPI) client steered by Aya's xDS server.

Started by controller/tests/grpcio_xds.rs with the path of an xDS bootstrap
naming Aya's ADS port. It runs three grpcio backends on 127.0.0.1:0 whose one
method answers with their own port (a generic handler: no stubs), prints
`PORTS p1 p2 p3`, and then, for every `GO n` line on stdin, makes n calls
through the channel `xds:///web` and prints `COUNTS c1 c2 c3` (calls answered
per backend, in port order). EOF on stdin ends it.
"""

import os
import sys
from concurrent import futures

bootstrap = sys.argv[1]
os.environ["GRPC_XDS_BOOTSTRAP"] = bootstrap

import grpc  # noqa: E402  (after the bootstrap variable is set)

METHOD = "/aya.test.Echo/Port"


def backend():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    port_box = {}

    def answer(request, context):
        return str(port_box["port"]).encode()

    handler = grpc.method_handlers_generic_handler(
        "aya.test.Echo", {"Port": grpc.unary_unary_rpc_method_handler(answer)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    port_box["port"] = port
    server.start()
    return server, port


servers = [backend() for _ in range(3)]
ports = [p for _, p in servers]
print("PORTS " + " ".join(str(p) for p in ports), flush=True)

channel = None
for line in sys.stdin:
    parts = line.split()
    if not parts or parts[0] != "GO":
        continue
    n = int(parts[1])
    if channel is None:
        channel = grpc.insecure_channel("xds:///web")
    call = channel.unary_unary(METHOD)
    counts = {p: 0 for p in ports}
    errors = 0
    for _ in range(n):
        try:
            got = int(call(b"", timeout=10, wait_for_ready=True))
            counts[got] = counts.get(got, 0) + 1
        except grpc.RpcError as e:
            errors += 1
            print(f"call failed: {e.code()} {e.details()}", file=sys.stderr, flush=True)
    print("COUNTS " + " ".join(str(counts[p]) for p in ports) + f" {errors}", flush=True)

if channel is not None:
    channel.close()
for s, _ in servers:
    s.stop(None)
