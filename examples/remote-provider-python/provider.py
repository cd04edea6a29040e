#!/usr/bin/env python3
"""A Berth remote provider in Python: an imaginary cloud whose machines live in a JSON file.

It speaks proto/berth/provider/v1/provider.proto with grpcio (the code is generated from the
committed proto at start-up), so an agent drives it with `type = "remote"` like any backend.

    pip install grpcio grpcio-tools grpcio-status
    python3 provider.py --state machines.json --listen unix:/run/berth/py.sock [--token-file F]

What every provider keeps (Berth's conformance suite checks it): create is idempotent by the
instance id; deleting something absent answers ALREADY_ABSENT; errors carry Berth's code and
the field in an ErrorDetail inside the standard google.rpc.Status details.
"""
import argparse
import hmac
import ipaddress
import json
import os
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto")


def generate():
    out = tempfile.mkdtemp(prefix="berth-proto-")
    proto = os.path.join(PROTO_ROOT, "berth", "provider", "v1", "provider.proto")
    if protoc.main(["protoc", f"-I{PROTO_ROOT}", f"--python_out={out}", f"--grpc_python_out={out}", proto]):
        sys.exit("cannot compile " + proto)
    sys.path.insert(0, out)


generate()
from berth.provider.v1 import provider_pb2 as pb  # noqa: E402
from berth.provider.v1 import provider_pb2_grpc as pbg  # noqa: E402

TEMPLATES = ["debian-12", "ubuntu-24.04"]
HOST = {"cores": 64, "memory_mib": 262144, "disk_gib": 10000}
GRPC_CODE = {
    pb.ERROR_CODE_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    pb.ERROR_CODE_INVALID_SPEC: grpc.StatusCode.INVALID_ARGUMENT,
    pb.ERROR_CODE_UNAUTHORIZED: grpc.StatusCode.PERMISSION_DENIED,
    pb.ERROR_CODE_UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    pb.ERROR_CODE_CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
}


def fail(context, code, message, field=""):
    """Ends the call with Berth's error: the gRPC code, and the ErrorDetail in the details."""
    detail = any_pb2.Any()
    detail.Pack(pb.ErrorDetail(code=code, field=field, message=message))
    text = f"invalid {field}: {message}" if field else message
    grpc_code = GRPC_CODE[code]
    status = status_pb2.Status(code=grpc_code.value[0], message=text, details=[detail])
    context.abort_with_status(rpc_status.to_status(status))


class Cloud(pbg.ProviderServicer):
    def __init__(self, state_file, token):
        self.state_file = state_file
        self.token = token
        self.lock = threading.Lock()  # one change at a time: a cancelled create may still run

    def load(self):
        """{"next": the next machine number (never reused), "machines": {instance id: machine}}"""
        try:
            with open(self.state_file) as f:
                return json.load(f)
        except FileNotFoundError:
            return {"next": 1, "machines": {}}

    def save(self, state):
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.state_file)  # whole or not at all

    def check_token(self, context):
        if self.token is None:
            return
        got = dict(context.invocation_metadata()).get("authorization", "")
        if not hmac.compare_digest(got.encode(), ("Bearer " + self.token).encode()):
            fail(context, pb.ERROR_CODE_UNAUTHORIZED, "missing or wrong bearer token")

    @staticmethod
    def key(ref, context):
        which = ref.WhichOneof("ref")
        if which is None:
            fail(context, pb.ERROR_CODE_INVALID_SPEC, "expected an instance_id or a backend_id", "id")
        return which, getattr(ref, which)

    def find(self, state, ref, context, missing_ok=False):
        which, value = self.key(ref, context)
        for m in state["machines"].values():
            if m[which] == value:
                return m
        if not missing_ok:
            fail(context, pb.ERROR_CODE_NOT_FOUND, f"no machine with {which} {value}")

    @staticmethod
    def instance(m):
        return pb.Instance(
            instance_id=m["instance_id"], backend_id=m["backend_id"], kind=pb.GUEST_KIND_VM,
            name=m["name"], state=m["state"], ipv4=m["ipv4"], cores=m["cores"],
            memory_mib=m["memory_mib"], disk_gib=m["disk_gib"], login_user=m["user"],
        )

    def Validate(self, request, context):
        self.check_token(context)
        ok = os.access(os.path.dirname(os.path.abspath(self.state_file)), os.W_OK)
        status = pb.CHECK_STATUS_OK if ok else pb.CHECK_STATUS_FAIL
        return pb.ValidateResponse(checks=[pb.Check(name="state file", status=status, detail=self.state_file)])

    def Capabilities(self, request, context):
        self.check_token(context)
        caps = pb.Capabilities(power=True, vms=True, reboot=True, graceful_shutdown=True,
                               reconfigure=True, list_templates=True, capacity=True)
        return pb.CapabilitiesResponse(capabilities=caps, backend="imaginary-cloud", protocol_minor=0)

    def refuse(self, spec, context):
        if spec.kind == pb.GUEST_KIND_CONTAINER:
            fail(context, pb.ERROR_CODE_UNSUPPORTED, "containers on the imaginary cloud")
        for field, ok, why in [
            ("cores", 1 <= spec.cores <= 8192, f"must be between 1 and 8192 (got {spec.cores})"),
            ("memory_mib", spec.memory_mib >= 16, f"must be at least 16 MiB (got {spec.memory_mib})"),
            ("memory_mib", spec.memory_mib <= HOST["memory_mib"], f"more than the host has ({HOST['memory_mib']} MiB)"),
            ("disk_gib", spec.disk_gib >= 1, f"must be at least 1 GiB (got {spec.disk_gib})"),
            ("template", not spec.HasField("template") or spec.template in TEMPLATES, f"expected one of {TEMPLATES}"),
        ]:
            if not ok:
                fail(context, pb.ERROR_CODE_INVALID_SPEC, why, field)

    def Create(self, request, context):
        self.check_token(context)
        spec = request.spec
        self.refuse(spec, context)
        stage = lambda s, p: pb.CreateEvent(stage=pb.StageEvent(stage=s, phase=p))  # noqa: E731
        # Each step changes the file under the lock (never held while a message is sent), and
        # a step already done is skipped: a create cut off anywhere is finished by the next.
        with self.lock:
            state = self.load()
            made = spec.instance_id not in state["machines"]
            if made:  # idempotent: a machine already made for this id is returned
                n = state["next"]
                state["next"] = n + 1
                state["machines"][spec.instance_id] = {
                    "instance_id": spec.instance_id, "backend_id": f"py-{n}", "name": spec.name,
                    "state": pb.POWER_STATE_STOPPED, "ipv4": f"10.77.{n // 250}.{n % 250 + 2}",
                    "cores": spec.cores, "memory_mib": spec.memory_mib, "disk_gib": spec.disk_gib,
                    "user": spec.user or "debian"}
                self.save(state)
        if made:
            yield stage(pb.STAGE_CLONE_TEMPLATE, pb.STAGE_PHASE_STARTED)
            yield stage(pb.STAGE_CLONE_TEMPLATE, pb.STAGE_PHASE_COMPLETED)
        yield stage(pb.STAGE_START_VM, pb.STAGE_PHASE_STARTED)
        time.sleep(0.01)
        with self.lock:
            state = self.load()
            m = state["machines"].get(spec.instance_id)
            if m is None:
                fail(context, pb.ERROR_CODE_CONFLICT, "the machine was deleted while it was being made")
            m["state"] = pb.POWER_STATE_RUNNING
            self.save(state)
        yield stage(pb.STAGE_START_VM, pb.STAGE_PHASE_COMPLETED)
        yield pb.CreateEvent(instance=self.instance(m))

    def Describe(self, request, context):
        self.check_token(context)
        return self.instance(self.find(self.load(), request.id, context))

    def List(self, request, context):
        self.check_token(context)
        ms = sorted(self.load()["machines"].values(), key=lambda m: int(m["backend_id"][3:]))
        if request.HasField("kind") and request.kind == pb.GUEST_KIND_CONTAINER:
            ms = []
        return pb.ListResponse(instances=[self.instance(m) for m in ms])

    def Power(self, request, context):
        self.check_token(context)
        with self.lock:
            state = self.load()
            m = self.find(state, request.id, context)
            op = request.WhichOneof("op")
            if op is None:
                fail(context, pb.ERROR_CODE_INVALID_SPEC, "expected start, stop, shutdown or reboot", "op")
            m["state"] = pb.POWER_STATE_STOPPED if op in ("stop", "shutdown") else pb.POWER_STATE_RUNNING
            self.save(state)
            return self.instance(m)

    def Reconfigure(self, request, context):
        self.check_token(context)
        with self.lock:
            state = self.load()
            m = self.find(state, request.id, context)
            for f in ("cores", "memory_mib", "disk_gib"):
                if request.HasField(f):
                    m[f] = getattr(request, f)
            self.save(state)
            return pb.ReconfigureResponse(restart_required=m["state"] == pb.POWER_STATE_RUNNING)

    def Delete(self, request, context):
        self.check_token(context)
        with self.lock:
            state = self.load()
            m = self.find(state, request.id, context, missing_ok=True)
            if m is None:
                return pb.DeleteResponse(outcome=pb.DELETE_OUTCOME_ALREADY_ABSENT)
            del state["machines"][m["instance_id"]]
            self.save(state)
            return pb.DeleteResponse(outcome=pb.DELETE_OUTCOME_DELETED)

    def ListTemplates(self, request, context):
        self.check_token(context)
        return pb.ListTemplatesResponse(templates=[pb.Template(id=t, name=t, kind=pb.GUEST_KIND_VM) for t in TEMPLATES])

    def Capacity(self, request, context):
        self.check_token(context)
        ms = self.load()["machines"].values()
        used = sum(m["disk_gib"] for m in ms)
        return pb.HostCapacity(cpus_total=HOST["cores"], memory_mib_total=HOST["memory_mib"],
                           memory_mib_used=sum(m["memory_mib"] for m in ms), disk_gib_total=HOST["disk_gib"],
                           disk_gib_free=max(0, HOST["disk_gib"] - used), instances=len(ms))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", required=True, help="the JSON file the machines live in")
    ap.add_argument("--listen", default="127.0.0.1:8422", help="ADDRESS:PORT or unix:/path (plaintext: keep it local)")
    ap.add_argument("--token-file", help="callers must send authorization: Bearer <this file's token>")
    a = ap.parse_args()
    host = a.listen.rsplit(":", 1)[0].strip("[]")
    if not a.listen.startswith("unix:") and not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"plaintext gRPC only on loopback or a Unix socket (got --listen {a.listen})")
    token = open(a.token_file).read().strip() if a.token_file else None
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pbg.add_ProviderServicer_to_server(Cloud(a.state, token), server)
    server.add_insecure_port(a.listen)
    server.start()
    print(f"imaginary cloud serving on {a.listen}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
