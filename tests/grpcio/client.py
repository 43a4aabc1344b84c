"""A proxyless gRPC client (grpcio) of Aya's aya.v1 API over mTLS.

Usage: client.py ADDR PROTO_DIR CERT_DIR OUT_DIR
Generates the Python stubs of proto/aya/v1 with grpc_tools into OUT_DIR, then
as the client certificate of CERT_DIR (client.pem / client.key, CA ca.pem):
GetSnapshot and the first Watch message of cluster "web", and SetOverride
(which the `watch` role must not be allowed). Also tries GetSnapshot with no
client certificate. Prints one JSON object with what happened.
"""
import json
import os
import sys

from grpc_tools import protoc


def main():
    addr, proto_dir, cert_dir, out_dir = sys.argv[1:5]
    files = [f"aya/v1/{f}" for f in sorted(os.listdir(os.path.join(proto_dir, "aya", "v1")))]
    rc = protoc.main(
        ["grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
        + files
    )
    if rc != 0:
        raise SystemExit(f"protoc failed: {rc}")
    sys.path.insert(0, out_dir)
    import grpc
    from aya.v1 import admin_pb2, admin_pb2_grpc, watch_pb2, watch_pb2_grpc

    def read(name):
        with open(os.path.join(cert_dir, name), "rb") as f:
            return f.read()

    opts = [("grpc.ssl_target_name_override", "localhost")]
    out = {"grpcio": grpc.__version__}
    creds = grpc.ssl_channel_credentials(
        root_certificates=read("ca.pem"),
        private_key=read("client.key"),
        certificate_chain=read("client.pem"),
    )
    with grpc.secure_channel(addr, creds, options=opts) as ch:
        decisions = watch_pb2_grpc.DecisionServiceStub(ch)
        snap = decisions.GetSnapshot(watch_pb2.GetSnapshotRequest(cluster="web"), timeout=10)
        out["snapshot_version"] = snap.version
        out["weights"] = {e.backend: e.weight for e in snap.endpoints}
        first = next(iter(decisions.Watch(watch_pb2.WatchRequest(cluster="web"), timeout=10)))
        out["watch_version"] = first.version
        try:
            admin_pb2_grpc.AdminServiceStub(ch).SetOverride(
                admin_pb2.SetOverrideRequest(cluster="web"), timeout=10
            )
            out["admin"] = "allowed"
        except grpc.RpcError as e:
            out["admin"] = e.code().name
            out["admin_message"] = e.details()
    anon = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"))
    with grpc.secure_channel(addr, anon, options=opts) as ch:
        try:
            watch_pb2_grpc.DecisionServiceStub(ch).GetSnapshot(
                watch_pb2.GetSnapshotRequest(cluster="web"), timeout=10
            )
            out["no_client_cert"] = "served"
        except grpc.RpcError as e:
            out["no_client_cert"] = e.code().name
    print(json.dumps(out))


if __name__ == "__main__":
    main()
