"""Formats of Berth's own in docs/openapi.json, so schemathesis can make values the server
takes: an OpenSSH public key line, an age X25519 recipient, and the base64 of an Ed25519
public key. Loaded by scripts/schemathesis.sh (SCHEMATHESIS_HOOKS)."""

import schemathesis
from hypothesis import strategies as st

SSH_KEYS = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
]
AGE_RECIPIENTS = [
    "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
]
# Ed25519 public keys (the RFC 8032 test vectors' keys), standard base64.
ED25519_KEYS = [
    "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
    "PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=",
]

schemathesis.openapi.format(
    "openssh-public-key",
    st.builds(
        lambda key, comment: f"{key} {comment}" if comment else key,
        st.sampled_from(SSH_KEYS),
        st.from_regex(r"\A[a-z0-9@.-]{0,20}\Z"),
    ),
)
schemathesis.openapi.format("age-recipient", st.sampled_from(AGE_RECIPIENTS))
schemathesis.openapi.format("ed25519-public-key", st.sampled_from(ED25519_KEYS))
