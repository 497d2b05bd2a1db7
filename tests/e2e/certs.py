"""A throwaway PKI for the TLS tests, made with the ``openssl`` command.

``make_ca(directory)`` creates a self-signed test CA (EC P-256, basic
constraints CA:TRUE, key usage keyCertSign/cRLSign) and returns a ``TestCA``;
``ca.issue(name)`` signs a new server certificate with a fresh P-256 key,
SAN ``DNS:localhost, IP:127.0.0.1`` by default, extended key usage
serverAuth and a random serial, so every call gives a different certificate
(for reload tests).  ``make_pki()`` creates the usual set in one temporary
directory: the test CA, a second unrelated CA ("other", which signed nothing
a server presents), and server certificates for Dovecot and for popgate.

Files are PEM: ``cert`` (the leaf alone), ``chain`` (leaf first, then the
CA certificate), ``key`` (PKCS#8).  Everything is world-readable, keys
included: Dovecot's processes and popgate must read them, and they protect
nothing.  Certificates are valid from the moment they are made, for ten
years (all peers share this machine's clock).

Typical use (session-scoped fixture)::

    @pytest.fixture(scope="session")
    def pki():
        p = certs.make_pki()
        yield p
        p.cleanup()

    ctx = ssl.create_default_context(cafile=pki.ca.cert)
    cert_b = pki.ca.issue("popgate-b")   # a different certificate, same CA
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile

DEFAULT_SANS = ("DNS:localhost", "IP:127.0.0.1")

__all__ = ["CertError", "DEFAULT_SANS", "Pki", "ServerCert", "TestCA",
           "fingerprint", "make_ca", "make_pki"]


class CertError(RuntimeError):
    """The openssl command failed."""


def _openssl(*args: str, cwd: str) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise CertError(f"openssl {' '.join(args)} failed:\n"
                        + proc.stderr.decode("utf-8", "replace")[-2000:])


def _readable(*paths: str) -> None:
    """Certificates for everyone, keys for their owner only (popgate
    refuses a key others may read)."""
    for p in paths:
        os.chmod(p, 0o600 if p.endswith(".key") else 0o644)


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lower-case hex (as getpeercert gives it
    with binary_form=True)."""
    return hashlib.sha256(der).hexdigest()


def _pem_to_der(path: str) -> bytes:
    with open(path, encoding="ascii") as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


@dataclasses.dataclass(frozen=True)
class ServerCert:
    """A leaf certificate and its key.  ``der`` is the leaf in DER form,
    ``serial`` the serial number as lower-case hex (no leading zeros)."""

    name: str
    cert: str
    chain: str
    key: str
    der: bytes = dataclasses.field(repr=False)
    serial: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.der)

    def pem(self) -> tuple[bytes, bytes]:
        """(chain PEM, key PEM) bytes, e.g. to write over other files."""
        with open(self.chain, "rb") as c, open(self.key, "rb") as k:
            return c.read(), k.read()


@dataclasses.dataclass
class TestCA:
    """A test certificate authority living in ``directory``."""

    __test__ = False  # not a pytest test class

    name: str
    directory: str
    cert: str
    key: str

    def issue(self, name: str, *, cn: str = "localhost",
              sans: tuple[str, ...] = DEFAULT_SANS, days: int = 3650) -> ServerCert:
        """A new server certificate signed by this CA, with a new key.
        ``name`` is the file prefix: ``<name>.pem``, ``<name>-chain.pem``,
        ``<name>.key``; an existing name is overwritten."""
        d = self.directory
        key, csr = f"{name}.key", f"{name}.csr"
        cert, chain, ext = f"{name}.pem", f"{name}-chain.pem", f"{name}.ext"
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", key, cwd=d)
        _openssl("req", "-new", "-key", key, "-subj", f"/O=popgate tests/CN={cn}",
                 "-out", csr, cwd=d)
        with open(os.path.join(d, ext), "w", encoding="ascii") as f:
            f.write(
                "basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = serverAuth\n"
                "subjectKeyIdentifier = hash\n"
                "authorityKeyIdentifier = keyid:always\n"
                f"subjectAltName = {', '.join(sans)}\n"
            )
        # Random positive serial (first byte below 0x80), so two
        # certificates of one CA never share a serial.
        serial = "0x" + format(secrets.randbelow(1 << 63) + 1, "x")
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                 "-set_serial", serial, "-days", str(days), "-sha256",
                 "-extfile", ext, "-out", cert, cwd=d)
        with open(os.path.join(d, cert), "rb") as c, open(self.cert, "rb") as ca:
            leaf, root = c.read(), ca.read()
        with open(os.path.join(d, chain), "wb") as f:
            f.write(leaf + root)
        paths = [os.path.join(d, p) for p in (key, cert, chain)]
        _readable(*paths)
        for p in (csr, ext):
            os.unlink(os.path.join(d, p))
        cert_path = os.path.join(d, cert)
        return ServerCert(name=name, cert=cert_path, chain=os.path.join(d, chain),
                          key=os.path.join(d, key), der=_pem_to_der(cert_path),
                          serial=serial[2:])


def make_ca(directory: str, name: str = "ca", cn: str = "popgate test CA") -> TestCA:
    """A self-signed EC P-256 CA: ``<name>.pem`` and ``<name>.key`` in
    ``directory``."""
    os.makedirs(directory, exist_ok=True)
    key, cert = f"{name}.key", f"{name}.pem"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", key, cwd=directory)
    _openssl("req", "-x509", "-new", "-key", key, "-sha256", "-days", "3650",
             "-subj", f"/O=popgate tests/CN={cn}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash",
             "-out", cert, cwd=directory)
    _readable(os.path.join(directory, key), os.path.join(directory, cert))
    return TestCA(name=name, directory=directory, cert=os.path.join(directory, cert),
                  key=os.path.join(directory, key))


@dataclasses.dataclass
class Pki:
    """The test CA, an unrelated CA and two server certificates."""

    directory: str
    ca: TestCA
    other_ca: TestCA
    dovecot: ServerCert
    popgate: ServerCert

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def make_pki(parent: str | None = None) -> Pki:
    """A fresh PKI in a new temporary directory (world-traversable)."""
    d = tempfile.mkdtemp(prefix="pgpki-", dir=parent)
    os.chmod(d, 0o755)
    ca = make_ca(d, "ca")
    other = make_ca(d, "other-ca", cn="unrelated test CA")
    return Pki(directory=d, ca=ca, other_ca=other,
               dovecot=ca.issue("dovecot"), popgate=ca.issue("popgate"))
