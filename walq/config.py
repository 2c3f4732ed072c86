"""The TOML configuration contract (design.md), validated by pydantic.

Precedence: WALQ_* environment variables over the TOML file over defaults.
Nested keys use '__': ``WALQ_SERVERS__PG1__COMPRESSION=lz4``. Unknown keys
and bad values are refused with one line naming the key and what is allowed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from walq.checksums import DEFAULT_CHECKSUM, ChecksumName
from walq.codecs import CODEC_NAMES
from walq.errors import ConfigError, clip
from walq.fsutil import set_group_access
from walq.keys import DEFAULT_GROUP
from walq.masking import mask_secrets, url_passwords

WORKER_GROUP_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
SERVER_NAME_RE = re.compile(
    r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z"
)  # fullmatch: "$" accepts a trailing newline
CompressionName = Literal["none", "gzip", "bzip2", "xz", "zstd", "lz4", "snappy"]
assert set(get_args(CompressionName)) == set(CODEC_NAMES)


def _absolute(v: Path) -> Path:
    """Paths are never relative to whatever directory walq happens to be started in."""
    if not v.is_absolute():
        raise ValueError("must be an absolute path")
    return v


def _check_retention(v: str | None) -> str | None:
    """A retention_policy is refused at load time (one line naming the key), never at expiry."""
    if v is None:
        return None
    # imported here: only a config that sets a policy pays for the retention modules
    from walq.retention.policy import parse_retention_policy

    parse_retention_policy(v)  # ValueError names what is wrong
    return v


def check_server_name(name: str) -> str:
    """Server names become path components and Redis keys: no '/', no '..'."""
    if not SERVER_NAME_RE.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"server name {clip(name)} is invalid: use letters, digits, '_', '-', '.' (no '/' or '..')"
        )
    return name


POSTGRES_SCHEMES = ("postgresql", "postgres")  # libpq's URI prefixes
BROKER_SCHEMES = (
    "redis",
    "rediss",
)  # understood by both kombu (Celery) and redis-py (locks, status)
LOCK_SCHEMES = ("redis", "rediss", "unix")  # redis-py's Redis.from_url
URL_SCHEMES = {
    "catalog_url": POSTGRES_SCHEMES,
    "broker_url": BROKER_SCHEMES,
    "lock_url": LOCK_SCHEMES,
}


def check_url(value: str, schemes: tuple[str, ...]) -> str:
    """Refuse a URL without one of ``schemes`` or that urllib cannot split (e.g. a bad port).

    Checked when the config loads, so a typo fails at once with one line instead of
    inside a library that quotes the URL, password included, in its logs. The message
    never carries the URL itself (the caller echoes it masked).
    """
    from urllib.parse import urlsplit

    scheme, sep, _ = value.partition("://")
    if not sep or scheme.lower() not in schemes:
        raise ValueError("must start with " + " or ".join(f"{s}://" for s in schemes))
    if any(ch.isspace() for ch in value):
        raise ValueError("must not contain spaces (percent-encode them: %20)")
    if re.search(r"%(?![0-9A-Fa-f]{2})", value):
        raise ValueError(
            "has a '%' that is not followed by two hex digits (percent-encode it: %25)"
        )
    try:
        parts = urlsplit(value)
        if "," not in parts.netloc:  # libpq allows host1:port1,host2:port2
            _ = parts.port  # ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {mask_secrets(str(exc))}") from None
    if (
        scheme.lower() in BROKER_SCHEMES
        and parts.path.strip("/")
        and not parts.path.strip("/").isdigit()
    ):
        raise ValueError("the path must be a Redis database number (redis://host:6379/0)")
    return value


def check_conninfo(value: str) -> str:
    """A libpq conninfo: a postgresql:// URI, or ``key=value`` pairs (values may be quoted).

    The same grammar as libpq's conninfo_parse, without the keyword list (which varies
    by libpq version): whatever passes here reaches libpq as a well-formed string.
    """
    if value.startswith(tuple(f"{s}://" for s in POSTGRES_SCHEMES)):
        return check_url(value, POSTGRES_SCHEMES)
    i, n = 0, len(value)
    while True:
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            return value
        start = i
        while i < n and not value[i].isspace() and value[i] != "=":
            i += 1
        keyword = value[start:i]
        while i < n and value[i].isspace():
            i += 1
        if not keyword or i >= n or value[i] != "=":
            raise ValueError("is neither a postgresql:// URI nor libpq key=value pairs")
        i += 1
        while i < n and value[i].isspace():
            i += 1
        i = _skip_conninfo_value(value, i)


def _skip_conninfo_value(value: str, i: int) -> int:
    """Index just past one conninfo value (quoted with '...' or bare, backslash escapes)."""
    quoted = i < len(value) and value[i] == "'"
    i += quoted
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            i += 2
            continue
        if (quoted and ch == "'") or (not quoted and ch.isspace()):
            return i + quoted
        i += 1
    if quoted:
        raise ValueError("has an unterminated quoted value")
    return i


# Durations as Barman writes them ("1 hour", "2 days"; a month is 31 days, as in Barman's
# parse_time_interval), plus minutes and seconds, which Barman's parser lacks.
_DURATION_RE = re.compile(r"\s*(\d+)\s*(second|minute|hour|day|week|month)s?\s*", re.IGNORECASE)
_UNIT_SECONDS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 31 * 86400,
}


def parse_duration(value: object) -> float:
    """Seconds in a duration: ``"N unit[s]"`` (second, minute, hour, day, week, month) or a
    number of seconds. Zero is refused: a bound of zero fails every check it guards."""
    if isinstance(value, str) and (match := _DURATION_RE.fullmatch(value)):
        seconds = float(int(match[1]) * _UNIT_SECONDS[match[2].lower()])
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        seconds = float(value)  # a number of seconds from a WALQ_* variable
    else:
        raise ValueError(
            "must be a duration such as '30 minutes', '1 hour' or '2 days' (units: second, "
            "minute, hour, day, week, month) or a number of seconds"
        )
    if not seconds > 0:
        raise ValueError("must be greater than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
QueueLimit = Annotated[int, Field(ge=0)]

# What `walq check` holds each server's archiving to (Barman's key names), set per server
# or once at the top level for every server: walq.report.progress reads them.
CHECK_BOUNDS = ("last_wal_maximum_age", "max_incoming_wals_queue", "archive_lag_maximum")
MIN_ARCHIVE_LAG_MAXIMUM = 300.0  # seconds: a cron period of a few minutes is normal, not lag


def default_archive_lag_maximum(scan_interval: float) -> float:
    """archive_lag_maximum when neither the server nor the top level sets it: three scan
    intervals, and never under five minutes (an embedded cron job runs once a minute or so)."""
    return max(3 * scan_interval, MIN_ARCHIVE_LAG_MAXIMUM)


MIN_FLEET_LIVENESS_MAXIMUM = 30.0  # seconds: a worker busy starting up is not dead


def fleet_liveness_default(scan_interval: float) -> float:
    """fleet_liveness_maximum when unset: three beat ticks (one per scan_interval), never
    under 30 seconds."""
    return max(3 * scan_interval, MIN_FLEET_LIVENESS_MAXIMUM)


# Barman's WAL hook scripts (walq.hooks), set per server or once at the top level for every
# server, and how walq runs them (timeout, pause between retry-hook attempts, the bound on
# attempts: Barman retries forever, walq gives up after hook_max_attempts).
HOOK_SCRIPTS = (
    "pre_archive_script",
    "pre_archive_retry_script",
    "post_archive_retry_script",
    "post_archive_script",
    "pre_wal_delete_script",
    "pre_wal_delete_retry_script",
    "post_wal_delete_retry_script",
    "post_wal_delete_script",
)
HOOK_SETTINGS = ("hook_timeout", "hook_retry_sleep", "hook_max_attempts")


def check_hook_command(value: str | None) -> str | None:
    """A hook script is a shell command line (run with ``/bin/sh -c``, as Barman does):
    refused at load time when empty, holding a NUL or a newline, or with unbalanced quotes."""
    if value is None:
        return None
    if not value.strip():
        raise ValueError("must be a shell command, not empty")
    if "\0" in value or "\n" in value or "\r" in value:
        raise ValueError("must be one line (no NUL or newline)")
    import shlex

    try:
        shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"is not a valid shell command line: {exc}") from None
    return value


HookCommand = Annotated[str | None, AfterValidator(check_hook_command)]
HookTimeout = Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)]
HookSleep = Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)]
HookAttempts = Annotated[int, Field(ge=1, le=10000)]


class HookScripts(BaseModel):
    """The eight HOOK_SCRIPTS keys, in a server's table and at the top level alike."""

    pre_archive_script: HookCommand = None
    pre_archive_retry_script: HookCommand = None
    post_archive_retry_script: HookCommand = None
    post_archive_script: HookCommand = None
    pre_wal_delete_script: HookCommand = None
    pre_wal_delete_retry_script: HookCommand = None
    post_wal_delete_retry_script: HookCommand = None
    post_wal_delete_script: HookCommand = None


DEFAULT_HOME = Path("/var/lib/walq")


def _server_defaults(home: Path, name: str) -> dict[str, Path | str]:
    """Where a server's directories and archive live when its table leaves them out."""
    base = home / name
    return {
        "incoming_dir": base / "incoming",
        "streaming_dir": base / "streaming",
        "errors_dir": base / "errors",
        "storage_url": f"file://{base / 'wals'}",
    }


class ServerSettings(HookScripts):
    """One ``[servers.<name>]`` table as written: directories and storage may be left out.

    Config resolves each table into a ServerConfig, which is what the rest of walq uses.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""  # accepted but ignored: the table key names the server
    conninfo: str | None = None
    incoming_dir: Path | None = None
    streaming_dir: Path | None = None
    errors_dir: Path | None = None
    storage_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_profile: str | None = None
    s3_sse: Literal["AES256", "aws:kms"] | None = None
    s3_sse_kms_key_id: str | None = None
    s3_storage_class: str | None = None
    s3_tags: dict[str, str] = Field(default_factory=dict)
    s3_multipart_threshold: Annotated[int, Field(ge=5 << 20)] = 100 << 20
    compression: CompressionName = "zstd"
    compression_level: int | None = None
    encryption: Literal["none", "gpg"] = "none"
    encryption_key_id: str | None = None
    encryption_passphrase_command: str | None = None
    # The verifying checksum new WAL gets (walq.checksums); None: the top-level one.
    checksum: ChecksumName | None = None
    batch_size: Annotated[int, Field(ge=0)] = 0
    system_identifier: Annotated[int, Field(ge=0)] = 0
    slot_name: str | None = None  # default walq_<server> (walq.postgres.default_slot_name)
    pg_receivewal_path: str = "pg_receivewal"
    # pg_receivewal's application_name (Barman's key): what synchronous_standby_names names
    # to make the receiver a synchronous standby (walq.postgres.syncrep).
    streaming_archiver_name: str = "walq_receive_wal"
    # What `walq check` expects of this server (Barman's keys): WAL arrives through
    # archive_command (archiver) and/or pg_receivewal (streaming_archiver).
    archiver: bool = True
    streaming_archiver: bool = False
    # Retention (Barman's syntax; walq.retention.policy). None: never expire. A server
    # without its own takes the top-level retention_policy.
    retention_policy: str | None = None
    # Where Barman keeps its lock files (Barman's barman_lock_directory, default its
    # barman_home): walq takes Barman's xlogdb lock there. Default: walq's home.
    barman_lock_directory: Path | None = None
    # `walq check`'s bounds (CHECK_BOUNDS); absent here: the top-level value, see Config.
    last_wal_maximum_age: Duration | None = None
    max_incoming_wals_queue: QueueLimit | None = None
    archive_lag_maximum: Duration | None = None
    # Barman's hook scripts (HookScripts) and how they run (HOOK_SETTINGS); absent here:
    # the top-level value, see Config.
    hook_timeout: HookTimeout | None = None
    hook_retry_sleep: HookSleep | None = None
    hook_max_attempts: HookAttempts | None = None

    # Fleet: the worker group (hosts) that sees this server's directories; its scan, CPU
    # and I/O tasks go to that group's queues (walq.keys.group_queue).
    worker_group: str = "default"

    @field_validator("worker_group")
    @classmethod
    def _worker_group(cls, v: str) -> str:
        if not WORKER_GROUP_RE.fullmatch(v):
            raise ValueError("use 1-64 letters, digits, '_' or '-' (it names Celery queues)")
        return v

    @field_validator("storage_url")
    @classmethod
    def _storage_scheme(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("file://") or v.startswith("s3://")):
            raise ValueError("must start with file:// or s3://")
        if (
            v is not None
            and v.startswith("file://")
            and not v.removeprefix("file://").startswith("/")
        ):
            raise ValueError("a file:// URL needs an absolute path (file:///path)")
        return v

    @field_validator("conninfo")
    @classmethod
    def _conninfo(cls, v: str | None) -> str | None:
        return check_conninfo(v) if v is not None else None

    @field_validator("incoming_dir", "streaming_dir", "errors_dir")
    @classmethod
    def _absolute_dir(cls, v: Path | None) -> Path | None:
        return v if v is None else _absolute(v)

    @field_validator("retention_policy")
    @classmethod
    def _retention(cls, v: str | None) -> str | None:
        return _check_retention(v)

    @field_validator("barman_lock_directory")
    @classmethod
    def _lock_dir(cls, v: Path | None) -> Path | None:
        return v if v is None else _absolute(v)

    @field_validator("slot_name")
    @classmethod
    def _slot(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-z_]{1,63}", v):
            raise ValueError("must match [0-9a-z_]+ (PostgreSQL slot names)")
        return v

    @field_validator("streaming_archiver_name")
    @classmethod
    def _application_name(cls, v: str) -> str:
        """PostgreSQL keeps 63 bytes of an application_name and turns anything but printable
        ASCII into '?', so a longer or odd name would never match synchronous_standby_names."""
        if not re.fullmatch(r"[ -~]{1,63}", v) or v != v.strip():
            raise ValueError(
                "must be 1 to 63 printable ASCII characters, without leading or trailing spaces"
            )
        return v

    @model_validator(mode="after")
    def _encryption_needs_key(self) -> Self:
        if self.encryption == "gpg" and not self.encryption_key_id:
            raise ValueError("encryption = 'gpg' needs encryption_key_id")
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            raise ValueError("s3_sse_kms_key_id needs s3_sse = 'aws:kms'")
        return self

    def resolve(self, name: str, home: Path) -> ServerConfig:
        """This table as the server ``name``, its left-out directories placed under ``home``."""
        written = self.model_dump(exclude_unset=True, exclude={"name"})
        return ServerConfig.model_validate(
            {**_server_defaults(home, name), **written, "name": name}
        )


class ServerConfig(ServerSettings):
    """One archived PostgreSQL server as walq uses it: named, every directory resolved.

    Config builds these from the TOML; built directly (tests, tools), the directories
    default to their places under the default home, as an empty table's would.
    """

    name: str
    incoming_dir: Path
    streaming_dir: Path
    errors_dir: Path
    storage_url: str
    checksum: ChecksumName = DEFAULT_CHECKSUM

    @model_validator(mode="before")
    @classmethod
    def _default_places(cls, data: object) -> object:
        """Built directly rather than by ``resolve``: left-out places under DEFAULT_HOME."""
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            return {**_server_defaults(DEFAULT_HOME, data["name"]), **data}
        return data

    @property
    def local_wals_dir(self) -> Path | None:
        """The wals/ directory for file:// storage, None for S3."""
        if self.storage_url.startswith("file://"):
            return Path(self.storage_url.removeprefix("file://"))
        return None

    def safe_dict(self) -> dict[str, object]:
        """Settings without secrets, for status output and logs."""
        data = self.model_dump(mode="json")
        if data.get("conninfo"):
            data["conninfo"] = mask_secrets(data["conninfo"])
        return data


class Config(BaseSettings, HookScripts):
    """The whole configuration; ``servers`` maps server names to their settings."""

    model_config = SettingsConfigDict(
        env_prefix="WALQ_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    home: Path = DEFAULT_HOME
    broker_url: str | None = None
    lock_url: str | None = None
    catalog_url: str | None = None
    spool_dir: Path = Field(
        default=None, validate_default=True
    )  # None: home/spool (_spool_under_home)
    scan_interval: Annotated[float, Field(gt=0)] = 10.0
    claim_timeout: Annotated[float, Field(gt=0)] = 600.0
    lock_ttl: Annotated[float, Field(gt=0)] = 60.0
    archive_workers: Annotated[int, Field(ge=0, le=256)] = 0  # 0: one per CPU
    prefetch_idle_timeout: Annotated[float, Field(gt=0)] = (
        30.0  # get-wal's prefetcher exits when unused this long
    )
    # Fleet task retries: transient errors back off exponentially (with jitter) up to
    # task_retry_backoff_max seconds; after task_max_retries the WAL is marked failed.
    task_max_retries: Annotated[int, Field(ge=0)] = 8
    task_retry_backoff: Annotated[float, Field(gt=0)] = 2.0
    task_retry_backoff_max: Annotated[float, Field(gt=0)] = 300.0
    # false: everything walq creates is 0600 (files) / 0700 (directories); true: 0640 / 0750,
    # for walq and PostgreSQL running as different users of one group.
    group_access: bool = False
    retention_policy: str | None = None  # the default for servers without their own
    checksum: ChecksumName = DEFAULT_CHECKSUM  # likewise: the verifying checksum of new WAL
    expire_interval: Annotated[float, Field(gt=0)] = 3600.0  # fleet beat: seconds between expiries
    # Fleet: Celery task events (what Flower shows). Off by default: they cost a PUBLISH per
    # task state; Flower turns them on in the workers while it runs (its enable_events).
    task_events: bool = False
    # Every server's `walq check` bounds unless its table sets its own (CHECK_BOUNDS).
    last_wal_maximum_age: Duration | None = None
    max_incoming_wals_queue: QueueLimit | None = None
    archive_lag_maximum: Duration | None = None
    # Fleet liveness (`walq check`'s "fleet workers" and "beat" lines): a worker heartbeat or
    # beat tick older than this is dead. None: fleet_liveness_default(scan_interval).
    fleet_liveness_maximum: Duration | None = None
    # Every server's hook scripts (HookScripts) and hook settings unless its table sets its own.
    hook_timeout: HookTimeout = 300.0  # seconds one hook run may take before it is killed
    hook_retry_sleep: HookSleep = 3.0  # seconds between a retry hook's attempts (Barman: 3)
    hook_max_attempts: HookAttempts = 30  # a retry hook's attempts before walq gives up
    _config_file: Path | None = PrivateAttr(default=None)  # BARMAN_CONFIGURATION for hooks
    if TYPE_CHECKING:  # what load returns: _fill_defaults resolves every table into a ServerConfig
        servers: dict[str, ServerConfig] = Field(default_factory=dict)
    else:
        servers: dict[str, ServerSettings] = Field(default_factory=dict)

    @field_validator("catalog_url", "broker_url", "lock_url")
    @classmethod
    def _url(cls, v: str | None, info: ValidationInfo) -> str | None:
        return check_url(v, URL_SCHEMES[str(info.field_name)]) if v else v

    @field_validator("retention_policy")
    @classmethod
    def _retention(cls, v: str | None) -> str | None:
        return _check_retention(v)

    @field_validator("spool_dir", mode="before")
    @classmethod
    def _spool_under_home(cls, v: object, info: ValidationInfo) -> object:
        """Left out, the spool is ``home/spool`` (a bad home is reported once, as itself)."""
        return info.data.get("home", DEFAULT_HOME) / "spool" if v is None else v

    @field_validator("home", "spool_dir")
    @classmethod
    def _absolute_path(cls, v: Path) -> Path:
        return _absolute(v)

    @model_validator(mode="after")
    def _fill_defaults(self) -> Config:
        filled: dict[str, ServerConfig] = {}
        for name, server in self.servers.items():
            try:
                check_server_name(name)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            filled[name] = server.resolve(name, self.home).model_copy(
                update={
                    "retention_policy": server.retention_policy or self.retention_policy,
                    "barman_lock_directory": server.barman_lock_directory or self.home,
                    "checksum": server.checksum or self.checksum,
                }
            )
            filled[name] = self._with_check_bounds(filled[name])
            if any(getattr(filled[name], key) for key in HOOK_SCRIPTS):
                self._hook_timeout_fits(name, server.hook_timeout)
            filled[name] = filled[name].model_copy(
                update={
                    key: getattr(self, key)
                    for key in (*HOOK_SCRIPTS, *HOOK_SETTINGS)
                    if getattr(filled[name], key) is None
                }
            )
        object.__setattr__(self, "servers", filled)
        from walq.layout import check_layout

        check_layout(self)
        return self

    def _hook_timeout_fits(self, name: str, own: float | None) -> None:
        """For a server with hooks: a hook run longer than claim_timeout would let its WAL's
        claim lapse (a second chain, or a lock reported stuck): refused, naming the key."""
        timeout = own if own is not None else self.hook_timeout
        if timeout >= self.claim_timeout:
            where = f"servers.{name}.hook_timeout" if own is not None else "hook_timeout"
            raise ValueError(
                f"{where} ({timeout:g}) must be below claim_timeout ({self.claim_timeout:g})"
            )

    def _with_check_bounds(self, server: ServerConfig) -> ServerConfig:
        """``server`` with the top-level check bounds it does not set itself, and the
        default archive_lag_maximum when neither sets that one."""
        inherited: dict[str, object] = {
            key: getattr(self, key) for key in CHECK_BOUNDS if getattr(server, key) is None
        }
        if inherited.get("archive_lag_maximum", server.archive_lag_maximum) is None:
            inherited["archive_lag_maximum"] = default_archive_lag_maximum(self.scan_interval)
        return server.model_copy(update=inherited)

    @property
    def config_file(self) -> Path | None:
        """The file this configuration was loaded from (None when built in code)."""
        return self._config_file

    @property
    def fleet(self) -> bool:
        return bool(self.broker_url)

    @property
    def liveness_maximum(self) -> float:
        """Seconds after which a silent worker or beat counts as dead (``walq check``)."""
        return self.fleet_liveness_maximum or fleet_liveness_default(self.scan_interval)

    @property
    def heartbeat_interval(self) -> float:
        """How often workers and beat write their liveness keys: well inside the bound."""
        return max(0.5, min(10.0, self.liveness_maximum / 4))

    @property
    def effective_lock_url(self) -> str | None:
        return self.lock_url or self.broker_url

    @property
    def catalog_path(self) -> Path:
        return self.home / "catalog.sqlite"

    def worker_groups(self) -> set[str]:
        """The worker groups the servers name (``default`` always among them)."""
        return {DEFAULT_GROUP, *(s.worker_group for s in self.servers.values())}

    def server(self, name: str) -> ServerConfig:
        """Look a server up by name; the error names the configured ones."""
        check_server_name(name)
        try:
            return self.servers[name]
        except KeyError:
            known = ", ".join(sorted(self.servers)) or "none"
            raise ConfigError(f"unknown server {clip(name)} (configured: {known})") from None


MAX_ERRORS_SHOWN = 5  # one line: the first problems, then how many more


def _masked_repr(value: object) -> str:
    """An offending value as the error echoes it: passwords masked, however malformed."""
    if isinstance(value, str):
        return clip(mask_secrets(value, *url_passwords(value)))
    return mask_secrets(clip(value))


def _format_validation(source: str, exc: ValidationError) -> str:
    """One line naming each bad key and what is wrong; echoed values are clipped and
    masked, and an error whose value came from a WALQ_* variable names the variable."""
    errors = exc.errors(include_url=False)
    parts: list[tuple[str, str]] = []
    for err in errors[:MAX_ERRORS_SHOWN]:
        loc = ".".join(_key_part(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:  # a whole-config rule (the layout): its message names the keys
            parts.append((source, msg))
            continue
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and err["type"] != "missing" and not isinstance(err["input"], dict):
            msg = f"{msg} (got {_masked_repr(err['input'])})"
        var = _env_variable(err["loc"])
        parts.append((f"environment variable {var}" if var else source, f"{loc}: {msg}"))
    merged: list[str] = []
    for i, (where, text) in enumerate(parts):
        merged.append(text if i and parts[i - 1][0] == where else f"{where}: {text}")
    if len(errors) > MAX_ERRORS_SHOWN:
        merged.append(f"and {len(errors) - MAX_ERRORS_SHOWN} more")
    return "; ".join(merged)


def _env_variable(loc: tuple[int | str, ...]) -> str | None:
    """The WALQ_* variable that set the value at ``loc`` (or a table above it), if any.

    pydantic-settings matches names case-insensitively, with '__' between levels."""
    present = {name.upper(): name for name in os.environ}
    for depth in range(len(loc), 0, -1):
        candidate = "WALQ_" + "__".join(str(p) for p in loc[:depth]).upper()
        if candidate in present:
            return present[candidate]
    return None


_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _key_part(part: str | int) -> str:
    """A key as written, unless it is long or odd (then clipped and quoted)."""
    text = str(part)
    return text if len(text) <= 64 and set(text) <= _KEY_CHARS else clip(text)


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    if explicit:
        return Path(explicit)
    if env := os.environ.get("WALQ_CONFIG"):
        return Path(env)
    return Path("walq.toml")


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the configuration, raising ConfigError with one clear line."""
    toml_path = resolve_config_path(path)
    if not toml_path.is_file():
        raise ConfigError(
            f"config file {str(toml_path)!r} not found (pass --config, set WALQ_CONFIG or create ./walq.toml)"
        )

    class _FromFile(Config):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                env_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
            )

    try:
        config = _FromFile()
    except ValidationError as exc:
        raise ConfigError(_format_validation(str(toml_path), exc)) from None
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"{toml_path}: {exc}") from None
    set_group_access(config.group_access)
    config._config_file = toml_path.absolute()
    return config
