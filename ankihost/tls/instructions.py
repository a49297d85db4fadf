"""What to do with the files `selfsigned.issue()` made: where they go, and how each Anki app
is made to trust the private CA (desktop on Linux, Windows, macOS; AnkiDroid; AnkiMobile).

Facts behind the steps: Anki desktop for Linux (and the `anki` wheel) verifies with rustls,
which reads `SSL_CERT_FILE`/`SSL_CERT_DIR` and the system store besides its own copy of the
public roots; Windows and macOS builds use the system's TLS and trust store. AnkiDroid syncs
through the same Rust code, which on Android trusts only the public roots plus the one
certificate pasted into its "Custom root certificate (PEM)" setting (AnkiDroid 2.19 or later):
a CA installed in Android's own settings is not used for syncing. iOS needs the CA installed as
a profile and then fully trusted by hand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ankihost.tls.selfsigned import IssuedFiles


def describe(files: IssuedFiles, port: int = 8080) -> str:
    """The text `ankihost tls self-signed` prints after making the files."""
    return "\n".join([_made(files), _serve(files, port), _desktop(files), _android(files), _ios(files)])


def url(files: IssuedFiles, port: int) -> str:
    host = files.names.first
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}/" if port == 443 else f"https://{host}:{port}/"


def _made(files: IssuedFiles) -> str:
    ca = "kept the existing CA" if files.ca_reused else "made a new private CA"
    names = ", ".join([*files.names.dns, *map(str, files.names.ips)])
    return (
        f"ankihost: {ca} and a server certificate for {names} in {files.folder}\n"
        f"  {files.ca_cert.name}      the CA certificate: install it on every device (below)\n"
        f"  {files.ca_key.name}      the CA's key (0600): keep it secret, it is needed only to renew;\n"
        f"              anyone holding it can impersonate any site to devices that trust the CA\n"
        f"  {files.server_cert.name}  the server certificate followed by the CA (valid until "
        f"{files.server_not_after:%Y-%m-%d}; run the command again with --force before then)\n"
        f"  {files.server_key.name}  the server's key (0600)\n"
        f"  CA fingerprint (SHA-256): {files.ca_fingerprint}\n"
    )


def _serve(files: IssuedFiles, port: int) -> str:
    return (
        "Serve HTTPS with them:\n"
        f"  ANKIHOST_TLS_CERT={files.server_cert} ANKIHOST_TLS_KEY={files.server_key} ankihost\n"
        "  (or give them to a reverse proxy: nginx ssl_certificate/ssl_certificate_key, Caddy tls)\n"
        f"  and set each app's sync server to {url(files, port)}\n"
    )


def _desktop(files: IssuedFiles) -> str:
    return (
        "Anki desktop\n"
        f"  Linux: start Anki with SSL_CERT_FILE={files.ca_cert} anki (AnkiWeb and other public\n"
        "    sites keep working); or add the CA to the system store, e.g. on Debian/Ubuntu\n"
        f"    sudo cp {files.ca_cert} /usr/local/share/ca-certificates/ankihost-ca.crt && sudo update-ca-certificates\n"
        f"  Windows: certutil -user -addstore Root {files.ca_cert.name} (or open it > Install Certificate >\n"
        "    Current User > Trusted Root Certification Authorities), then restart Anki\n"
        "  macOS: security add-trusted-cert -r trustRoot \\\n"
        f"      -k ~/Library/Keychains/login.keychain-db {files.ca_cert.name}\n"
        "    (or open it in Keychain Access and set Trust to Always Trust), then restart Anki\n"
    )


def _android(files: IssuedFiles) -> str:
    return (
        "AnkiDroid (2.19 or later)\n"
        "  Settings > Sync > Custom sync server > Custom root certificate (PEM): paste the whole\n"
        f"  text of {files.ca_cert.name} (one certificate, with its BEGIN and END lines).\n"
        "  Installing the CA in Android's settings is not enough: AnkiDroid syncs through Anki's\n"
        "  Rust code, which does not read Android's certificate stores. Older AnkiDroid versions\n"
        "  accept only certificates from public CAs (or plain http://).\n"
    )


def _ios(files: IssuedFiles) -> str:
    return (
        "AnkiMobile (iPhone, iPad)\n"
        f"  1. Send {files.ca_cert.name} to the device (AirDrop, Mail, or open it in Safari) and allow\n"
        "     the download of the profile.\n"
        "  2. Settings > General > VPN & Device Management: install the downloaded profile.\n"
        "  3. Settings > General > About > Certificate Trust Settings: turn on full trust for\n"
        f"     the CA (\"{files.ca_name}\").\n"
    )
