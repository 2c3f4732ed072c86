"""verify: read the whole archive back and compare it with the catalog.

Every archived row must have its object, every object its row, every object
must decode to bytes whose checksum (taken with the row's algorithm) matches the
catalog, and every timeline must be continuous. Rows marked ``expired`` by retention are not problems: their
objects are meant to be gone (one still present is an expiry to finish), and
continuity is checked from the oldest kept segment. Reads run on a few threads (decompression releases the GIL).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from walq.archive.identity import known_segment_size
from walq.catalog import Catalog, WalState
from walq.chunks import Checksum
from walq.config import ServerConfig
from walq.errors import WalqError
from walq.report.continuity import continuity
from walq.storage import Storage, StoredObject
from walq.storage.readback import plain_chunks


@dataclass
class VerifyReport:
    server: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    server: ServerConfig, catalog: Catalog, storage: Storage, threads: int = 4
) -> VerifyReport:
    report = VerifyReport(server.name)
    records = {r.name: r for r in catalog.records(server.name, WalState.ARCHIVED)}
    objects = {o.name: o for o in storage.list()}
    for name, rec in sorted(records.items()):
        try:
            storage.validate_key(name, rec.storage_key or "")
        except WalqError as exc:
            report.problems.append(f"{name}: catalog row refused: {exc}")
    for name in sorted(set(records) - set(objects)):
        report.problems.append(f"{name}: in the catalog but missing from storage")
    expired = {r.name for r in catalog.records(server.name, WalState.EXPIRED)}
    for name in sorted(set(objects) - set(records)):
        if name in expired:
            report.problems.append(
                f"{name}: expired but still in storage (an interrupted expiry: "
                "run walq expire again)"
            )
        else:
            report.problems.append(f"{name}: in storage but not in the catalog")

    def check(obj: StoredObject) -> str | None:
        rec = records[obj.name]
        try:
            summed = Checksum(rec.checksum_algorithm).of(
                plain_chunks(
                    storage,
                    obj,
                    server,
                    codec=rec.codec,
                    encrypted=rec.encryption == "gpg",
                    limit=rec.size or None,
                )
            )
        except (WalqError, OSError, ValueError) as exc:
            return f"{obj.name}: cannot be read back: {exc}"
        except Exception as exc:  # codec libraries raise their own types on corruption
            return f"{obj.name}: cannot be decoded: {exc}"
        if summed.hexdigest() != rec.checksum or summed.size != rec.size:
            return (
                f"{obj.name}: checksum mismatch ({summed.size} bytes read, catalog says {rec.size})"
            )
        return None

    both = [objects[n] for n in sorted(set(records) & set(objects))]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for problem in pool.map(check, both):
            report.checked += 1
            if problem:
                report.problems.append(problem)
    seg_size = known_segment_size(catalog, server)
    if seg_size and records:
        for start, end in continuity(list(records), seg_size).gaps:
            report.problems.append(
                f"gap: {start}..{end} missing" if start != end else f"gap: {start} missing"
            )
    return report
