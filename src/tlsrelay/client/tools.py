"""Postfix's own programs, run against one config directory, and OS layouts.

Every change to Postfix settings goes through `postconf -c DIR -e` or `-X`,
every table is built by `postmap -c DIR`, and effective values are read with
`postconf -c DIR -x`: Postfix knows its defaults and syntax better than a
regex. Program locations and the OS layout (CA bundle, reload command) are
looked up once and can be replaced in tests.

Layouts: Debian and Ubuntu keep the CA bundle at
/etc/ssl/certs/ca-certificates.crt; RHEL, CentOS, Rocky, Alma and Fedora at
/etc/pki/tls/certs/ca-bundle.crt. Both keep Postfix in /etc/postfix. Which
table types exist (hash needs Berkeley DB, which newer Fedora builds drop in
favour of lmdb) is asked from `postconf -m`, not guessed from the OS.

This module never edits main.cf text itself and never reloads a Postfix it
was not pointed at.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SBIN_DIRS = ("/usr/sbin", "/usr/lib/postfix/sbin", "/usr/libexec/postfix")
DEFAULT_CONFIG_DIR = Path("/etc/postfix")


class ToolError(Exception):
    """A Postfix program is missing or failed; the message says which and why."""


def find_program(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for directory in SBIN_DIRS:
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    raise ToolError(f"{name} not found: is Postfix installed?")


@dataclass(frozen=True)
class Layout:
    name: str
    ca_bundle: Path
    # The service manager's reload, used for the system's own /etc/postfix.
    reload_command: tuple[str, ...]
    maillog: Path


DEBIAN = Layout(
    "debian",
    Path("/etc/ssl/certs/ca-certificates.crt"),
    ("systemctl", "reload", "postfix"),
    Path("/var/log/mail.log"),
)
RHEL = Layout(
    "rhel",
    Path("/etc/pki/tls/certs/ca-bundle.crt"),
    ("systemctl", "reload", "postfix"),
    Path("/var/log/maillog"),
)
_RHEL_IDS = {"rhel", "centos", "fedora", "rocky", "almalinux", "ol", "amzn"}


def detect_layout(os_release: Path = Path("/etc/os-release")) -> Layout:
    """The layout named by os-release's ID and ID_LIKE (Debian if unknown)."""
    ids: set[str] = set()
    try:
        text = os_release.read_text(encoding="utf-8")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key in ("ID", "ID_LIKE"):
            ids.update(value.strip().strip('"').lower().split())
    return RHEL if ids & _RHEL_IDS else DEBIAN


class Postfix:
    """Postfix's programs bound to one config directory."""

    def __init__(self, config_dir: Path = DEFAULT_CONFIG_DIR) -> None:
        self.config_dir = Path(config_dir)

    @property
    def main_cf(self) -> Path:
        return self.config_dir / "main.cf"

    @property
    def master_cf(self) -> Path:
        return self.config_dir / "master.cf"

    def run(self, program: str, *args: str, input: str | None = None) -> str:
        command = [find_program(program), *args]
        log.debug("running %s", command)
        try:
            done = subprocess.run(
                command, input=input, capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolError(f"{program} failed: {exc}") from exc
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()
            raise ToolError(f"{' '.join(command)}: {detail}")
        return done.stdout

    def postconf(self, *args: str) -> str:
        return self.run("postconf", "-c", str(self.config_dir), *args)

    def effective(self, *names: str) -> dict[str, str]:
        """Effective values (defaults applied, `$name` expanded) of NAMES."""
        values = {}
        for line in self.postconf("-x", *names).splitlines():
            name, sep, value = line.partition("=")
            if sep:
                values[name.strip()] = value.strip()
        return values

    def explicit(self) -> dict[str, str]:
        """Parameters set in main.cf, as `postconf -n` reports them."""
        values = {}
        for line in self.postconf("-n").splitlines():
            name, sep, value = line.partition("=")
            if sep:
                values[name.strip()] = value.strip()
        return values

    def set(self, settings: dict[str, str]) -> None:
        if settings:
            self.postconf("-e", *(f"{k} = {v}" for k, v in settings.items()))

    def unset(self, names: list[str]) -> None:
        if names:
            self.postconf("-X", *names)

    def map_types(self) -> set[str]:
        return set(self.postconf("-m").split())

    def postmap(self, ref: str) -> None:
        self.run("postmap", "-c", str(self.config_dir), ref)

    def query(self, key: str, ref: str) -> str | None:
        """`postmap -q KEY REF`: the value, or None when the key is absent."""
        command = [find_program("postmap"), "-c", str(self.config_dir)]
        done = subprocess.run(
            [*command, "-q", key, ref], capture_output=True, text=True, timeout=60
        )
        if done.returncode == 1:
            return None
        if done.returncode != 0:
            raise ToolError(f"postmap -q {key} {ref}: {done.stderr.strip()}")
        return done.stdout.strip()

    def reload(self, layout: Layout) -> str:
        """Reload this Postfix; returns the command used, for the report."""
        if self.config_dir == DEFAULT_CONFIG_DIR and shutil.which("systemctl"):
            command = list(layout.reload_command)
            self._run_plain(command)
        else:
            command = [find_program("postfix"), "-c", str(self.config_dir), "reload"]
            self._run_plain(command)
        return " ".join(command)

    def _run_plain(self, command: list[str]) -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()
            raise ToolError(f"{' '.join(command)}: {detail}")
