#!/usr/bin/env python3
"""Example Berth script backend (protocol 1), Python 3 standard library only.

THIS IS AN EXAMPLE TO COPY AND ADAPT. It "makes" machines by writing JSON files into a state
directory ($BERTH_EXAMPLE_STATE) so that it runs anywhere, including Berth's test suite. A real
backend replaces the lines marked `ADAPT:` with calls to its own tooling (virt-install/virsh,
the OpenStack CLI, a cloud API ...), keeping the protocol handling around them.

Configure it with:

    [provisioner.script]
    command = "berth_backend.py"          # relative to the config file's directory
    env = { BERTH_EXAMPLE_STATE = "/var/lib/berth-example" }

Rules this example keeps (every backend must):
  * idempotent by contract_id: provisioning a contract that exists returns the existing machine;
  * exit 0 exactly when "success" is true;
  * one JSON object on stdout, logs on stderr, progress as `berth-stage: <stage> <phase>`;
  * "code": "not_found" when the machine does not exist;
  * state written atomically (temp file + rename), so a kill at any moment leaves no half machine.
"""

import hashlib
import json
import secrets
import os
import re
import sys
import tempfile

PROTOCOL = 1
EXTERNAL_ID = re.compile(r"^vm-[0-9a-f]{12}$")


def reply(obj, ok=True):
    json.dump(obj, sys.stdout)
    sys.stdout.write("\n")
    sys.exit(0 if ok else 1)


def fail(message, code="internal", retry=False):
    reply({"success": False, "error": message, "code": code, "retry_possible": retry}, ok=False)


def log(message):
    print(message, file=sys.stderr, flush=True)


def stage(name, phase):
    print(f"berth-stage: {name} {phase}", file=sys.stderr, flush=True)


def state_dir():
    d = os.environ.get("BERTH_EXAMPLE_STATE")
    if not d:
        fail("BERTH_EXAMPLE_STATE is not set: set it in [provisioner.script] env", code="unavailable")
    os.makedirs(d, exist_ok=True)
    return d


def external_id_for(contract_id):
    return "vm-" + hashlib.sha256(contract_id.encode()).hexdigest()[:12]


def address_for(contract_id):
    # Deterministic private address from the contract id: 10.a.b.c with c in 2..254.
    h = hashlib.sha256(("addr:" + contract_id).encode()).digest()
    return f"10.{h[0]}.{h[1]}.{2 + h[2] % 253}"


def path_for(external_id):
    if not EXTERNAL_ID.match(external_id or ""):
        return None
    return os.path.join(state_dir(), external_id + ".json")


def load(external_id):
    p = path_for(external_id)
    if p is None or not os.path.exists(p):
        return None
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def save(machine):
    d = state_dir()
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(machine, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path_for(machine["external_id"]))


def find(req):
    """The machine a request names (by contract_id, else by external_id), or None."""
    if req.get("contract_id"):
        m = load(external_id_for(req["contract_id"]))
        if m is not None and m.get("contract_id") == req["contract_id"]:
            return m
        return None
    if req.get("external_id"):
        return load(req["external_id"])
    fail("the request names no machine: give contract_id or external_id", code="invalid_spec")


def found(req):
    m = find(req)
    if m is None:
        what = req.get("contract_id") or req.get("external_id")
        fail(f"no machine for {what}", code="not_found")
    return m


def provision(req):
    contract_id = req.get("contract_id")
    if not contract_id:
        fail("provision needs a contract_id", code="invalid_spec")
    existing = find(req)
    if existing is not None:
        log(f"contract {contract_id} already has {existing['external_id']}: returning it")
        reply({"success": True, "instance": existing})
    offering = req["offering"]
    config = req["instance_config"]
    if config.get("kind", "vm") != "vm":
        fail("this backend makes VMs only", code="invalid_spec")
    external_id = external_id_for(contract_id)
    stage("configure_vm", "started")
    # ADAPT: create the machine here, e.g. virt-install --name <external_id> --vcpus ... or
    # `openstack server create --property berth_contract=<contract_id> ...`.
    machine = {
        "external_id": external_id,
        "contract_id": contract_id,
        "name": config["name"],
        "state": "running",
        "ip_address": address_for(contract_id),
        "ssh_port": 22,
        "cpu_cores": offering["cpu_cores"],
        "memory_mib": offering["memory_mib"],
        "disk_gib": offering["disk_gib"],
        # ADAPT: the password the machine was born with, if it has one. Berth's agent encrypts
        # it to the customer's key before it leaves this host.
        "root_password": secrets.token_urlsafe(18),
    }
    stage("configure_vm", "completed")
    stage("start_vm", "started")
    save(machine)
    stage("start_vm", "completed")
    log(f"provisioned {external_id} for contract {contract_id}")
    reply({"success": True, "instance": machine})


def set_state(req, state):
    m = found(req)
    # ADAPT: virsh start/destroy <external_id>, openstack server start/stop ...
    if m["state"] != state:
        m["state"] = state
        save(m)
    reply({"success": True, "instance": m})


def terminate(req):
    m = found(req)
    # ADAPT: virsh destroy + undefine --remove-all-storage, openstack server delete ...
    os.remove(path_for(m["external_id"]))
    log(f"terminated {m['external_id']}")
    reply({"success": True})


def list_all(_req):
    d = state_dir()
    machines = []
    for name in sorted(os.listdir(d)):
        if name.endswith(".json") and EXTERNAL_ID.match(name[:-5]):
            with open(os.path.join(d, name), encoding="utf-8") as f:
                machines.append(json.load(f))
    reply({"success": True, "instances": machines})


def health(_req):
    d = state_dir()
    if not os.access(d, os.W_OK):
        fail(f"state directory {d} is not writable", code="unavailable")
    reply({"success": True})


def main():
    try:
        req = json.load(sys.stdin)
    except ValueError as e:
        fail(f"the request is not JSON: {e}", code="invalid_spec")
    if req.get("protocol") != PROTOCOL:
        fail(f"this backend speaks protocol {PROTOCOL}, got {req.get('protocol')!r}", code="unsupported")
    actions = {
        "provision": provision,
        "status": lambda r: reply({"success": True, "instance": found(r)}),
        "start": lambda r: set_state(r, "running"),
        "stop": lambda r: set_state(r, "stopped"),
        "terminate": terminate,
        "list": list_all,
        "health": health,
    }
    action = actions.get(req.get("action"))
    if action is None:
        fail(f"unknown action {req.get('action')!r}", code="unsupported")
    action(req)


if __name__ == "__main__":
    main()
