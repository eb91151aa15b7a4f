"""A compute host over SSH: one asyncssh connection shared by SFTP (fsspec's sshfs) and commands.

Design. ``sshfs.SSHFileSystem`` opens its own asyncssh connection when it is built and exposes it
as ``fs.client``; :class:`SSHRunner` opens its command channels on that same connection
(``client.create_process``) on fsspec's event loop (``fs.loop``), so a host costs one TCP
connection and one login. Channels are bounded by ``cfg.max_sessions`` (OpenSSH's default
``MaxSessions`` is 10): commands get :data:`_COMMAND_CHANNELS` (2), one slot stays spare
(:data:`_SESSION_MARGIN`) and sshfs's SFTP pool gets the rest (7). x2c never calls sshfs's own
shell helpers (``checksum``, ``cp_file``), which would open channels beyond these.

sshfs never reconnects, so a lost connection is replaced by a new ``SSHFileSystem``
(``skip_instance_cache=True``: fsspec would otherwise hand back the dead cached instance), with
capped exponential backoff and jitter, at most ``cfg.reconnect_attempts`` logins. A command is
never re-sent after its connection dropped mid-way (it may have run): the caller gets
:class:`~x2c.errors.SSHConnectError` and decides; the next call reconnects first.

Host keys are always checked, against ``cfg.known_hosts``, else the ssh_config's
``UserKnownHostsFile``, else ``~/.ssh/known_hosts``: sshfs turns checking off unless
``known_hosts`` is passed, so it always is. Names resolve through
``cfg.ssh_config`` (default ``~/.ssh/config``): ``HostName``, ``User``, ``Port``,
``IdentityFile`` and ``ProxyJump`` are honoured by asyncssh.

:func:`translate_ssh_error` is the one place where asyncssh and OS exceptions become x2c errors.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import logging
import random
import shlex
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
from sshfs import SSHFileSystem

from x2c.config import HostConfig
from x2c.errors import (
    ConfigError,
    HostKeyError,
    RemoteCommandError,
    RemoteError,
    SSHAuthError,
    SSHConnectError,
    TransferError,
    X2CError,
)
from x2c.hosts.base import Completed
from x2c.hosts.host import Host

log = logging.getLogger(__name__)

T = TypeVar("T")

# asyncssh's AES-GCM (AES-NI through `cryptography`) moved SFTP data ~40% faster here than its
# default chacha20-poly1305 (290 vs 200 MB/s on loopback); all are offered, the server picks.
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
_COMMAND_CHANNELS = 2
# sshd frees a command's session a little after the client sees the channel close, so a new
# channel opened at once can be refused ("no more sessions") when all MaxSessions are in use:
# measured here with 8 SFTP + 2 command channels, never with 7 + 2. Keep one slot spare.
_SESSION_MARGIN = 1
_OPEN_RETRIES = 3
# SFTP requests in flight per open file; each is at most the server's max write/read length
# (OpenSSH: 255 KiB writes, 255 KiB reads), so 16 keeps ~4 MiB in flight per file.
SFTP_MAX_REQUESTS = 16
# Bytes of chunk writes in flight per file (each chunk at its own offset; at least one chunk), so
# the SFTP pipeline (SFTP_MAX_REQUESTS x 255 KiB) does not drain between chunks. What is in
# flight is buffered, and copied inside asyncssh, so this bounds a transfer's memory.
BYTES_IN_FLIGHT = 4 << 20


# -- the one mapping from asyncssh / OS exceptions to x2c errors --------------------------------

# Ordered: the first matching row wins, so subclasses come before their bases.
_AUTH = (
    asyncssh.PermissionDenied,
    asyncssh.IllegalUserName,
    asyncssh.PasswordChangeRequired,
    asyncssh.KeyImportError,
    asyncssh.KeyEncryptionError,
    asyncssh.KeyExportError,
    asyncssh.KeyGenerationError,
)
_COMMAND = (
    asyncssh.TimeoutError,
    asyncssh.ProcessError,
    asyncssh.BreakReceived,
    asyncssh.SignalReceived,
    asyncssh.TerminalSizeChanged,
)
_LOST = (
    asyncssh.SFTPConnectionLost,
    asyncssh.SFTPNoConnection,
    asyncssh.ConnectionLost,
    asyncssh.DisconnectError,
    asyncssh.ChannelOpenError,
    asyncssh.ChannelListenError,
)
# asyncssh's exceptions that do not derive from asyncssh.Error
_ASYNCSSH = (
    asyncssh.Error,
    asyncssh.ConfigParseError,
    asyncssh.ChannelListenError,
    *_AUTH,
    *_COMMAND,
)
_OS_LOST = (ConnectionError, TimeoutError, socket.gaierror, BrokenPipeError)
_OS_LOST_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EPIPE,
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__  # not __context__: that may be an unrelated earlier error


def translate_ssh_error(
    exc: BaseException,
    *,
    host: str,
    target: str,
    action: str,
    argv: Sequence[str] = (),
    host_key_hint: Callable[[], str] | None = None,
) -> X2CError | None:
    """Map an exception raised while talking to ``host`` onto x2c's tree; None if not ours.

    sshfs rewraps some asyncssh errors as builtin ``OSError`` (``raise PermissionError(...) from
    exc``), so the cause chain is searched for the asyncssh exception first. ``action`` says what
    was being done ("connect", "write '/path'", "run 'sbatch'"), for the message.
    """
    found: BaseException | None = None
    for link in _chain(exc):
        if isinstance(link, X2CError):
            return link
        if isinstance(link, _ASYNCSSH):
            found = link
            break
    where = f"{host} ({target})" if target != host else host
    if found is None and _is_sftp_pool_exhausted(exc):
        return SSHConnectError(
            f"could not {action} on {where}: no SFTP channel could be opened (the connection "
            "was lost, or the server refused more sessions); check that the host is up, then "
            "run again",
            host=host,
        )
    if found is None:
        os_error = next((e for e in _chain(exc) if isinstance(e, OSError)), None)
        if os_error is None:
            return None
        if isinstance(os_error, _OS_LOST) or os_error.errno in _OS_LOST_ERRNOS:
            doing = f"connect to {where}" if action == "connect" else f"{action} on {where}"
            return SSHConnectError(
                f"could not {doing}: {os_error}; check that the host is up and reachable from here",
                host=host,
            )
        return TransferError(
            f"could not {action} on {where}: {os_error}; check the path, its permissions and "
            "the free space on the host",
            host=host,
        )
    return _translate_asyncssh(
        found, where=where, host=host, action=action, argv=argv, host_key_hint=host_key_hint
    )


def _is_sftp_pool_exhausted(exc: BaseException) -> bool:
    """sshfs's channel pool swallows the ChannelOpenError of a lost connection (or of a server
    at MaxSessions) and raises a bare ValueError without a cause (sshfs pools/base.py
    ``_maybe_new_channel``, pools/hard.py and soft.py ``get``): the ChannelOpenError row."""
    return type(exc) is ValueError and "Can't create any SFTP connections" in str(exc)


def _translate_asyncssh(
    exc: BaseException,
    *,
    where: str,
    host: str,
    action: str,
    argv: Sequence[str],
    host_key_hint: Callable[[], str] | None,
) -> X2CError:
    reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        hint = host_key_hint() if host_key_hint else f"the host key of {where} is not trusted"
        return HostKeyError(hint, host=host)
    if isinstance(exc, _AUTH):
        return SSHAuthError(
            f"{where} refused the login or its key could not be used ({reason}); check User and "
            "IdentityFile in the ssh_config and that the public key is in authorized_keys; "
            "x2c does not retry logins, so the account is not locked",
            host=host,
        )
    if isinstance(exc, asyncssh.ConfigParseError):
        return ConfigError(f"the ssh_config for {where} cannot be parsed: {reason}")
    if isinstance(exc, _COMMAND):
        command = shlex.join(argv) if argv else action
        timed_out = isinstance(exc, asyncssh.TimeoutError)
        return RemoteCommandError(
            f"{command!r} on {where} "
            + ("did not finish in time" if timed_out else f"failed: {reason}"),
            host=host,
            argv=argv,
            returncode=getattr(exc, "returncode", None),
            stderr="timeout" if timed_out else str(getattr(exc, "stderr", "") or ""),
        )
    if isinstance(exc, _LOST):
        return SSHConnectError(
            f"the SSH connection to {where} failed during {action}: {reason}; it is "
            "re-opened on the next call (with backoff)",
            host=host,
        )
    if isinstance(exc, asyncssh.SFTPError):
        return TransferError(
            f"could not {action} on {where}: {reason}; check the path, its permissions and "
            "the free space on the host",
            host=host,
        )
    return RemoteError(f"could not {action} on {where}: {reason}", host=host)


# -- the host ------------------------------------------------------------------------------------


class SSHHost(Host):
    """A compute host reached over SSH; build it with :func:`x2c.hosts.open_host`.

    Thread-safe: transfers call it from several threads; all I/O runs on fsspec's event loop.
    """

    def __init__(self, cfg: HostConfig) -> None:
        if cfg.ssh is None:
            raise ConfigError(f"host {cfg.name!r} has no 'ssh' target; use LocalHost")
        self.name = cfg.name
        self._cfg = cfg
        self._target = cfg.ssh
        self._ssh_config = self._resolve_ssh_config(cfg)
        self._known_hosts = cfg.known_hosts or self._resolve_known_hosts()
        self._lock = threading.Lock()
        self._generation = 0
        self._command_slots: asyncio.Semaphore | None = None
        self.runner = SSHRunner(self)
        self._down: X2CError | None = None
        self._closed = False
        self._fs: Any = self._connect_with_backoff()
        _quiet_orphaned_sftp_errors(self._fs.loop)

    # connection management

    @staticmethod
    def _resolve_ssh_config(cfg: HostConfig) -> Path | None:
        if cfg.ssh_config is not None:
            if not cfg.ssh_config.is_file():
                raise ConfigError(
                    f"ssh_config {cfg.ssh_config} for host {cfg.name!r} does not exist; fix "
                    "HostConfig.ssh_config"
                )
            return cfg.ssh_config
        default = Path.home() / ".ssh" / "config"
        return default if default.is_file() else None

    def _resolve_known_hosts(self) -> Path:
        """The ssh_config's ``UserKnownHostsFile`` for this host (its first file), else
        ``~/.ssh/known_hosts``. ``UserKnownHostsFile none`` would turn checking off: ignored."""
        try:
            opts = asyncssh.SSHClientConnectionOptions(
                config=[str(self._ssh_config)] if self._ssh_config else None,
                host=self._target,
                client_keys=None,
            )
        except (OSError, ValueError, asyncssh.Error) as exc:
            raise ConfigError(
                f"cannot read the ssh_config {self._ssh_config} for {self.name}: {exc}"
            ) from exc
        files = opts.known_hosts
        if files is None:
            log.warning(
                "%s: ssh_config says UserKnownHostsFile none; x2c checks host keys "
                "against ~/.ssh/known_hosts anyway",
                self.name,
            )
        elif isinstance(files, list) and files:
            return Path(str(files[0])).expanduser()
        return Path.home() / ".ssh" / "known_hosts"

    def _open_fs(self) -> Any:
        if not self._known_hosts.is_file():
            raise HostKeyError(
                f"known_hosts file {self._known_hosts} for {self.name} does not exist; create "
                f"it with the verified key of {self._target} (ssh-keyscan, then check the "
                "fingerprint with the site)",
                host=self.name,
            )
        cfg = self._cfg
        try:
            return SSHFileSystem(
                self._target,
                skip_instance_cache=True,
                config=[str(self._ssh_config)] if self._ssh_config else None,
                known_hosts=str(self._known_hosts),
                connect_timeout=cfg.connect_timeout,
                login_timeout=cfg.connect_timeout,
                keepalive_interval=cfg.keepalive_interval,
                keepalive_count_max=cfg.keepalive_count_max,
                encryption_algs=list(PREFERRED_CIPHERS),
                max_sessions=cfg.max_sessions - _SESSION_MARGIN,  # sshfs keeps 2 off its pool
            )
        except Exception as exc:
            raise self.translate(exc, "connect") from exc

    def _connect_with_backoff(self) -> Any:
        cfg = self._cfg
        delay = cfg.reconnect_backoff_s
        started = time.monotonic()
        last: SSHConnectError | None = None
        for attempt in range(1, cfg.reconnect_attempts + 1):
            try:
                fs = self._open_fs()
            except SSHConnectError as exc:  # host key, auth and config errors are not retried
                last = exc
                log.warning("connect to %s: attempt %d failed: %s", self.name, attempt, exc)
            else:
                log.info("connected to %s (%s), attempt %d", self.name, self._target, attempt)
                return fs
            if attempt < cfg.reconnect_attempts:
                # jitter over the upper half keeps many workers from logging in in lockstep
                jitter = random.uniform(0.5, 1.0)  # noqa: S311 (not for security)
                time.sleep(min(delay, cfg.reconnect_backoff_max_s) * jitter)
                delay *= 2
        raise SSHConnectError(
            f"could not connect to {self.name} ({self._target}) after {cfg.reconnect_attempts} "
            f"attempts in {time.monotonic() - started:.0f} s; last error: {last}; x2c stops "
            "here rather than retry logins in a storm: check the host, then rerun",
            host=self.name,
        ) from last

    @property
    def generation(self) -> int:
        """Number of reconnects so far."""
        return self._generation

    def reconnect(self, seen_generation: int) -> None:
        """Replace the connection used at ``seen_generation`` unless that was already done.

        After one full round of failed attempts the host stays down: every later call raises
        the same error at once, so retries higher up never multiply the logins.
        """
        with self._lock:
            if seen_generation != self._generation and self._down is None:
                return
            self._replace_locked()

    def _replace_locked(self) -> None:
        if self._down is not None:
            raise self._down
        old, self._fs = self._fs, None
        if old is not None:
            self._close_fs(old)
        try:
            self._fs = self._connect_with_backoff()
        except X2CError as exc:
            self._down = exc
            raise
        self._generation += 1

    def current(self) -> tuple[Any, int]:
        """The live filesystem and its generation; reconnects first if the connection closed."""
        with self._lock:
            if self._closed:
                raise SSHConnectError(f"host {self.name} was closed; open it again", host=self.name)
            if self._fs is None or self._fs.client.is_closed():
                log.warning("connection to %s was lost; reconnecting", self.name)
                self._replace_locked()
            return self._fs, self._generation

    @property
    def fs(self) -> Any:
        """The live ``sshfs.SSHFileSystem`` (changes after a reconnect)."""
        return self.current()[0]

    def close(self) -> None:
        """Close the SSH connection."""
        with self._lock:
            fs, self._fs = self._fs, None
            self._closed = True
        if fs is not None:
            self._close_fs(fs)

    def _close_fs(self, fs: Any) -> None:
        async def close() -> None:
            fs.client.close()
            with suppress(Exception):
                await asyncio.wait_for(fs.client.wait_closed(), 5)

        with suppress(Exception):  # closing a dead connection cannot fail usefully
            self.call(fs, close())

    # plumbing shared by the runner and the file methods

    def call(self, fs: Any, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the filesystem's event loop from any other thread and return it."""
        return asyncio.run_coroutine_threadsafe(coro, fs.loop).result()

    def command_slots(self) -> asyncio.Semaphore:
        """The semaphore bounding command channels (created on the event loop's first use)."""
        if self._command_slots is None:
            self._command_slots = asyncio.Semaphore(_COMMAND_CHANNELS)
        return self._command_slots

    def translate(self, exc: BaseException, action: str, argv: Sequence[str] = ()) -> X2CError:
        """:func:`translate_ssh_error` for this host; unknown exceptions become RemoteError."""
        mapped = translate_ssh_error(
            exc,
            host=self.name,
            target=self._target,
            action=action,
            argv=argv,
            host_key_hint=self._host_key_hint,
        )
        if mapped is None:
            return RemoteError(f"could not {action} on {self.name}: {exc!r}", host=self.name)
        return mapped

    def _host_key_hint(self) -> str:
        host, port = self._target, 22
        try:
            opts = asyncssh.SSHClientConnectionOptions(
                config=[str(self._ssh_config)] if self._ssh_config else None,
                host=self._target,
                known_hosts=None,
                client_keys=None,
            )
            host, port = str(opts.host), int(opts.port)
            known = asyncssh.read_known_hosts(str(self._known_hosts)).match(host, host, port)
            changed = bool(known[0] or known[1])
        except (OSError, ValueError, asyncssh.Error):
            changed = False
        where = f"{self._target} ({host}:{port})"
        if changed:
            return (
                f"host key of {where} does not match the one in {self._known_hosts}: it "
                "changed, or this is not the host you think; check the new key with the site's "
                "administrators before replacing the entry"
            )
        return (
            f"host key of {where} is not in {self._known_hosts}; verify it and add it with "
            f"ssh-keyscan -p {port} {host} >> {self._known_hosts} (check the fingerprint first)"
        )

    def _io(self, action: str, fn: Callable[[Any], T]) -> T:
        return self._guard(action, fn, self.current()[0])

    def _guard(self, action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise self.translate(exc, action) from exc

    # file methods (SFTP on the shared connection)

    def write_file(self, path: str, chunks: Iterable[bytes]) -> int:
        """Write ``chunks`` to ``path`` through SFTP.

        Each chunk goes out as pipelined block writes (``SFTP_MAX_REQUESTS`` in flight), and
        while chunks (up to ``BYTES_IN_FLIGHT``) are on the wire the next is read (and hashed by
        the caller) on this thread, so the source, the hashing and the encryption overlap on
        separate cores.
        """
        fs, _ = self.current()
        action = f"write {path!r}"
        handle = self._guard(
            f"create {path!r}", fs.open, path, "wb", max_requests=SFTP_MAX_REQUESTS
        )
        # sshfs's SSHFile only offers blocking writes; its asyncssh file (``_file``) lets one
        # write run on the event loop while the next chunk is produced here.
        remote = handle._file
        pending: collections.deque[concurrent.futures.Future[int]] = collections.deque()
        sizes: collections.deque[int] = collections.deque()
        written = in_flight = 0
        ok = False
        try:
            for chunk in chunks:
                while pending and in_flight + len(chunk) > BYTES_IN_FLIGHT:
                    self._guard(action, pending.popleft().result)
                    in_flight -= sizes.popleft()
                pending.append(
                    asyncio.run_coroutine_threadsafe(remote.write(chunk, written), fs.loop)
                )
                sizes.append(len(chunk))
                written += len(chunk)
                in_flight += len(chunk)
            while pending:
                self._guard(action, pending.popleft().result)
            ok = True
        finally:
            # let writes still in flight end (they fail fast on a dead connection): cancelling
            # them would orphan asyncssh's per-request tasks and their errors
            concurrent.futures.wait(pending, timeout=30)
            if ok:
                self._guard(f"close {path!r}", handle.close)
            else:
                with suppress(Exception):
                    handle.close()
        return written

    def read_file(self, path: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the bytes of ``path`` read through SFTP with pipelined requests."""
        handle = self._io(
            f"open {path!r}", lambda fs: fs.open(path, "rb", max_requests=SFTP_MAX_REQUESTS)
        )
        try:
            while chunk := self._guard(f"read {path!r}", handle.read, chunk_size):
                yield chunk
        finally:
            with suppress(Exception):
                handle.close()

    def rename(self, src: str, dst: str) -> None:
        """SFTP posix-rename@openssh.com: atomic, replaces ``dst``. (A server without that
        extension gets sshfs's copy-and-delete fallback, which is not atomic.)"""
        self._io(f"rename {src!r} to {dst!r}", lambda fs: fs.mv(src, dst))

    def remove(self, path: str) -> None:
        """Unlink ``path`` over SFTP; a missing file is fine."""

        def unlink(fs: Any) -> None:
            with suppress(FileNotFoundError):
                fs.rm_file(path)

        self._io(f"remove {path!r}", unlink)

    def size(self, path: str) -> int:
        """SFTP stat of ``path``."""
        return int(self._io(f"stat {path!r}", lambda fs: fs.info(path)["size"]))

    def exists(self, path: str) -> bool:
        """SFTP stat of ``path``: only "no such file" reads as missing (fsspec's ``exists``)."""
        return bool(self._io(f"stat {path!r}", lambda fs: fs.exists(path)))

    def read_bytes(self, path: str, *, tail: int | None = None) -> bytes | None:
        """Read the small file ``path`` (or its last ``tail`` bytes) over SFTP; None if
        missing."""

        def read(fs: Any) -> bytes | None:
            try:
                with fs.open(path, "rb") as handle:
                    if tail is not None:
                        handle.seek(max(0, handle.seek(0, 2) - tail))
                    data: bytes = handle.read()
                    return data
            except FileNotFoundError:  # sshfs's rewrap of SFTPNoSuchFile, nothing else
                return None

        return self._io(f"read {path!r}", read)

    def makedirs(self, path: str) -> None:
        """SFTP mkdir of ``path`` and its missing parents."""
        self._io(f"create the directory {path!r}", lambda fs: fs.makedirs(path, exist_ok=True))


class SSHRunner:
    """Runs argv lists on an :class:`SSHHost`, each element quoted with :func:`shlex.quote`.

    The remote login shell parses the command line, so a string is never accepted: only a list,
    joined with :func:`shlex.join`. Commands share the host's one connection (at most
    ``_COMMAND_CHANNELS`` at once). A command whose connection drops mid-way is not re-sent.
    """

    def __init__(self, host: SSHHost) -> None:
        self._host = host

    @property
    def name(self) -> str:
        """The host's name."""
        return self._host.name

    def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Completed:
        """Run ``argv`` on the host and return its outcome (any exit code)."""
        if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
            raise TypeError(f"argv must be a non-empty list of str, not {argv!r}")
        command = shlex.join(argv)
        log.debug("%s run: %s", self.name, command)
        fs, _ = self._host.current()
        slots = self._host.command_slots

        async def run() -> asyncssh.SSHCompletedProcess:
            async with slots():
                process = await _open_process(fs.client, command, input)
                finished = False
                try:
                    done: asyncssh.SSHCompletedProcess = await process.wait(timeout=timeout)
                    finished = True
                finally:
                    # run() would return at EOF, before the channel is closed; sshd still counts
                    # the session against MaxSessions until then, so wait for the close here.
                    # A command that timed out gets a KILL "signal" request and is not awaited
                    # for long. OpenSSH 9.2 ignores that request, so the command runs on until
                    # it ends: callers that need a hard limit wrap it in timeout(1).
                    if not finished:
                        with suppress(Exception):
                            process.kill()
                    process.close()
                    with suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(process.wait_closed(), None if finished else 2)
                return done

        try:
            result = self._host.call(fs, run())
        except Exception as exc:
            raise self._host.translate(exc, f"run {argv[0]!r}", argv) from exc
        if result.returncode is None:
            raise SSHConnectError(
                f"the connection to {self.name} closed before {argv[0]!r} reported an exit "
                "status; it may or may not have run: check before running it again",
                host=self.name,
            )
        return Completed(
            argv=tuple(argv),
            returncode=result.returncode,
            stdout=_text(result.stdout),
            stderr=_text(result.stderr),
        )


def _quiet_orphaned_sftp_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log at debug level, instead of as errors on stderr, the per-request tasks asyncssh leaves
    behind when a pipelined SFTP read or write dies with its connection ("Task exception was
    never retrieved"): the transfer already got the error and retries. Anything else goes to
    the loop's previous handler."""
    previous = loop.get_exception_handler()
    if getattr(previous, "x2c_quiet", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, _LOST) and "never retrieved" in str(context.get("message", "")):
            log.debug("orphaned SFTP request after a lost connection: %r", exc)
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.x2c_quiet = True  # type: ignore[attr-defined]
    loop.call_soon_threadsafe(loop.set_exception_handler, handler)


async def _open_process(
    client: asyncssh.SSHClientConnection, command: str, input: bytes | None
) -> asyncssh.SSHClientProcess[bytes]:
    """Open a command channel; a refused open never ran anything, so it is retried briefly."""
    for attempt in range(_OPEN_RETRIES):
        try:
            process: asyncssh.SSHClientProcess[bytes] = await client.create_process(
                command, input=input, encoding=None
            )
            return process
        except asyncssh.ChannelOpenError:
            if attempt == _OPEN_RETRIES - 1 or client.is_closed():
                raise
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return "" if data is None else str(data)
