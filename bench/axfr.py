"""Workload 8: reading the counties registry zone by AXFR, as ``geoweb publish`` does first.

The zone ``geoweb zone export`` writes for the 3,231 counties (each with a domain) is served by a
``knotd`` with Knot's default timeouts (``tcp-io-timeout`` 500 ms: a reader that stalls one of the
server's writes that long is cut) and a TSIG key allowed to transfer. Timed, each several times:

- ``ours``: ``discovery.dns_publish.Publisher.read`` (``discovery.axfr``, TSIG checked);
- ``dnspython``: ``dns.query.xfr`` with the RRsets of the records a publish manages turned to text,
  the way the publisher read the zone before (kept as the "before" figure);
- ``kdig``: Knot's own client (``knot-dnsutils``), wall time of the whole process, and the transfer
  time kdig reports itself.

``python -m bench.axfr`` runs it alone and prints the figures as JSON.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig

from discovery.dns_publish import Publisher, TsigKey

from .common import build_store
from .dnscold import HOST, ZONE, free_udp_tcp_port, publish, run_knotd

KEY_NAME = "bench-key."
SECRET = base64.b64encode(b"geoweb bench secret, 32 bytes..!").decode()


@contextmanager
def knot(binary: str, workdir: Path, zone_file: Path, timeout: float = 60.0) -> Iterator[int]:
    """``knotd`` with its default timeouts serving the zone, transfers allowed with the TSIG key;
    yields its port. Stopped by its own process id."""
    port = free_udp_tcp_port()
    (workdir / "db").mkdir(parents=True, exist_ok=True)
    config = workdir / "knot-axfr.conf"
    config.write_text(
        f"""server:
    rundir: "{workdir}"
    listen: {HOST}@{port}
database:
    storage: "{workdir / "db"}"
log:
  - target: stderr
    any: warning
key:
  - id: {KEY_NAME}
    algorithm: hmac-sha256
    secret: {SECRET}
acl:
  - id: transfer
    key: {KEY_NAME}
    action: transfer
template:
  - id: default
    storage: "{workdir}"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: {ZONE}.
    file: "{zone_file}"
    acl: transfer
""",
        encoding="utf-8",
    )
    with run_knotd(binary, workdir, config, "knotd-axfr.log", port, timeout):
        yield port


def _dnspython_read(port: int) -> int:
    """The zone through ``dns.query.xfr``, managed RRsets to text: the publisher's old reader."""
    key = dns.tsig.Key(KEY_NAME, SECRET, dns.tsig.HMAC_SHA256)
    zone = dns.name.from_text(ZONE)
    cells = dns.name.from_text("_cells", zone)
    count = 0
    for message in dns.query.xfr(
        HOST, zone, port=port, keyring={key.name: key}, keyname=key.name, relativize=False
    ):
        for rrset in message.answer:
            managed = rrset.name.is_subdomain(cells) or rrset.name.labels[0] == b"_open311"
            if managed and rrset.rdtype in (dns.rdatatype.TXT, dns.rdatatype.PTR):
                count += len(frozenset(r.to_text() for r in rrset))
    return count


def _time(function: Any, runs: int) -> dict[str, Any]:
    """Wall seconds of ``runs`` calls; a call that raises counts as a failure (and its time)."""
    seconds: list[float] = []
    failures: list[str] = []
    for _ in range(runs):
        start = time.perf_counter()
        try:
            function()
        except Exception as exc:  # a cut transfer is the figure here, not an error of the bench
            failures.append(f"{type(exc).__name__}: {exc}"[:200])
        seconds.append(time.perf_counter() - start)
    return {
        "runs": runs,
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "failures": len(failures),
        "failure": failures[0] if failures else None,
    }


def _kdig(binary: str, port: int, runs: int) -> dict[str, Any]:
    """``kdig`` AXFR with the key, discarding the output: process wall time and its own figure."""
    wall: list[float] = []
    own: list[float] = []
    records = 0
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(
            [
                binary, f"@{HOST}", "-p", str(port), "-y", f"hmac-sha256:{KEY_NAME}:{SECRET}",
                "AXFR", f"{ZONE}.", "+noall", "+stats",
            ],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        wall.append(time.perf_counter() - start)
        found = re.search(r"in ([0-9.]+) ms", result.stdout)
        if found:
            own.append(float(found.group(1)) / 1000)
        counted = re.search(r"([0-9]+) records\)", result.stdout)
        records = int(counted.group(1)) if counted else records
    return {
        "runs": runs,
        "median_s": statistics.median(wall),
        "min_s": min(wall),
        "transfer_median_s": statistics.median(own) if own else None,
        "records": records,
    }


def run(db: Path, workdir: Path, runs: int) -> dict[str, Any]:
    """Workload 8 on the counties store ``db``; ``{"skipped": why}`` without ``knotd``/``kdig``."""
    knotd = shutil.which("knotd") or shutil.which("/usr/sbin/knotd")
    kdig = shutil.which("kdig")
    if knotd is None or kdig is None:
        missing = "knotd (Knot DNS)" if knotd is None else "kdig (knot-dnsutils)"
        return {"skipped": f"{missing} is not installed"}
    work = workdir / "axfr"
    work.mkdir(exist_ok=True)
    _counties, _boundaries, zone = publish(db, work, f"http://{HOST}:9")
    with knot(knotd, work, zone) as port:
        publisher = Publisher(HOST, ZONE, TsigKey(KEY_NAME, SECRET), port=port)
        held = publisher.read()
        managed = len(held.domains) + sum(len(t) for t in held.trees.values())
        results = {
            "zone": ZONE,
            "zone_bytes": zone.stat().st_size,
            "managed_rrsets": managed,
            "ours": _time(publisher.read, runs),
            "dnspython": _time(lambda: _dnspython_read(port), runs),
            "kdig": _kdig(kdig, port, runs),
            "knotd": subprocess.run(
                [knotd, "--version"], capture_output=True, text=True, check=False
            ).stdout.strip(),
        }
    return results


def section(d: dict[str, Any] | None) -> list[str]:
    """The report's section for this workload (``bench/report.py``)."""
    out = ["## 8. Reading the registry zone by AXFR (`geoweb publish`)", ""]
    if d is None or "skipped" in d:
        reason = "not run" if d is None else d["skipped"]
        return [*out, f"Not measured: {reason}.", ""]
    ours, old, kdig = d["ours"], d["dnspython"], d["kdig"]

    def failed(r: dict[str, Any]) -> str:
        return f"{r['failures']} of {r['runs']}" + (f" ({r['failure']})" if r["failure"] else "")

    transfer = kdig["transfer_median_s"]
    out += [
        f"The counties zone `geoweb zone export` writes ({kdig['records']:,} records, "
        f"{d['zone_bytes'] / 1e6:.2f} MB as a master file) served by {d['knotd']} with its "
        "default timeouts (`tcp-io-timeout` 500 ms), transfer allowed with a TSIG key; "
        f"{ours['runs']} transfers each, one after another, wall time.",
        "",
        "| reader | median s | min s | transfers the server cut |",
        "| --- | ---: | ---: | ---: |",
        f"| ours: `Publisher.read` (`discovery/axfr.py`, TSIG checked, {d['managed_rrsets']:,} "
        f"managed RRsets kept) | {ours['median_s']:.3f} | {ours['min_s']:.3f} | {failed(ours)} |",
        f"| before: `dns.query.xfr`, managed RRsets to text | {old['median_s']:.3f} "
        f"| {old['min_s']:.3f} | {failed(old)} |",
        f"| `kdig` (whole process{', transfer alone ' + f'{transfer:.3f} s' if transfer else ''})"
        f" | {kdig['median_s']:.3f} | {kdig['min_s']:.3f} | 0 of {kdig['runs']} |",
        "",
    ]
    return out


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory(prefix="geoweb-bench-axfr-") as tmp:
        db, _import_s = build_store(Path(tmp))
        results = run(db, Path(tmp), runs)
    print(json.dumps(results, indent=2))
    print("\n".join(section(results)))


if __name__ == "__main__":
    main()
