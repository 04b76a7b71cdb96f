"""SuperNode identity keys for node authentication.

Flower 1.41 authenticates a SuperNode by an elliptic-curve key pair on a NIST curve: the node
signs its requests with the private key, and the SuperLink accepts only nodes whose public key
an operator registered (``flwr supernode register``). The public key travels in OpenSSH format.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedrobust.errors import FedrobustError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class NodeKeyFiles:
    private: Path
    public: Path


def write_node_keys(folder: Path, name: str, force: bool = False) -> NodeKeyFiles:
    """Create ``<name>.key`` (OpenSSH private key, owner-only) and ``<name>.pub`` (OpenSSH) in ``folder``;
    the SuperNode reads only the OpenSSH private format."""
    if not _NAME.match(name):
        raise FedrobustError(f"--name {name!r}: use letters, digits, '-', '_' or '.' (e.g. hospital-3)")
    folder = Path(folder)
    files = NodeKeyFiles(folder / f"{name}.key", folder / f"{name}.pub")
    for path in (files.private, files.public):
        if path.exists() and not force:
            raise FedrobustError(f"{path} already exists; pass --force to replace it (then register the new "
                                 f"public key)")
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    files.private.unlink(missing_ok=True)
    fd = os.open(files.private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    files.public.write_bytes(public + f" fedrobust-{name}\n".encode())
    return files


def check_private_key(path: Path) -> None:
    """A one-line error now rather than a SuperNode that dies with a cryptography traceback."""
    path = Path(path)
    if not path.is_file():
        raise FedrobustError(f"node key {path} does not exist; create it with `fedrobust deploy keys --name NAME`")
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise FedrobustError(f"{path} is not an unencrypted OpenSSH private key; create one with "
                             f"`fedrobust deploy keys --name NAME`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise FedrobustError(f"{path} is not an elliptic-curve key; Flower needs one on a NIST curve "
                             f"(`fedrobust deploy keys` makes P-384)")
