"""Retention core: which base backups exist, how timelines descend, what may expire.

Pure functions over names and bytes: storage, catalog and CLI wiring call these
with their own I/O, so the same rules hold on local disk and on S3. Nothing is
imported here, so importing one module costs only that module.

    backups.py    BackupInfo; parse .backup history files and Barman backup.info; known_backups
    timelines.py  Lineage from .history files; positions "on the line" of a timeline
    policy.py     retention_policy strings; plan_expiry; plan_delete_before
"""
