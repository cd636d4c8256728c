"""Getting onto Ray: reaching a cluster the user started (token authentication) and taking an embedded
Ray down with the search.

Token authentication (Ray >= 2.52; on by default for local clusters since 2.59): `ray start --head` turns it
on when a token exists on that machine (`~/.ray/auth_token`, `RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`;
any earlier `ray.init()` leaves one there), and `ray.init(address=...)` with an explicit address never
turns it on by itself (only `address="auto"` does), so the driver sent no token and Ray retried
"InvalidAuthToken" for 25 s. `prepare_connection` asks the cluster's GCS once, in milliseconds, whether it
takes this process as it is; if it wants a token and one is here, token mode is switched on for this
process (what `RAY_AUTH_MODE=token` does); otherwise it fails at once with the fix.

Ray is imported only here, in nas.cluster.ray_train and in nas.pipeline.ray_runner.
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from nas.core.errors import NasError, UsageError

log = logging.getLogger(__name__)
AUTH_FIX = ("run `ray get-auth-token` on the head node and set RAY_AUTH_TOKEN=<that token> here "
            "(or copy it to ~/.ray/auth_token)")


@contextlib.contextmanager
def _stderr_to_log() -> Iterator[None]:
    """Ray's C++ client warns on file descriptor 2 for each refused call; keep those lines out of the
    terminal (the error we raise says it once) and in the debug log."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                log.debug("ray: %s", line)


def _gcs_accepts(address: str, timeout_ms: int = 5000) -> bool | None:
    """True if the GCS at `address` takes this process's credentials, False if it refuses them as
    unauthenticated, None if the question cannot be asked (an older Ray, another failure: ray.init decides)."""
    try:
        from ray._raylet import InnerGcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:
        return None
    try:
        with _stderr_to_log():
            InnerGcsClient.standalone(address, None, timeout_ms)
    except AuthenticationError:
        return False
    except Exception as exc:  # timeouts, unreachable: ray.init reports those with its own words
        log.debug("GCS probe of %s: %s: %s", address, type(exc).__name__, exc)
        return None
    return True


def _token_source() -> str | None:
    """Where Ray would read a token from in this process (None: nowhere)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']}"
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() and default.stat().st_size else None


def _enable_token_auth() -> None:
    """RAY_AUTH_MODE=token for this process and its children, as Ray itself does for `address="auto"`."""
    from ray._raylet import AuthenticationTokenLoader, Config
    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")   # Ray caches its config: make this process see token mode now
    AuthenticationTokenLoader.instance().reset_cache()


def prepare_connection(address: str) -> None:
    """Make `ray.init(address=address)` connect to a cluster started with `ray start --head`, or raise
    NasError naming the address, the cause and the fix."""
    host_port = address.removeprefix("ray://")
    if address == "auto" or address.startswith("ray://") or ":" not in host_port:
        return   # Ray resolves these itself (Ray Client has its own handshake)
    accepted = _gcs_accepts(host_port)
    if accepted is not False:
        return
    where = f"cannot connect to the Ray cluster at --address {address}: it uses token authentication"
    mode = os.environ.get("RAY_AUTH_MODE")
    source = _token_source()
    if mode is not None and mode.lower() != "token":
        raise NasError(f"{where} and RAY_AUTH_MODE={mode} here; unset RAY_AUTH_MODE or set RAY_AUTH_MODE=token")
    if source is None:
        raise NasError(f"{where} and this machine has no Ray token; {AUTH_FIX}")
    if mode is None:
        _enable_token_auth()
        if _gcs_accepts(host_port) is not False:
            log.info("the Ray cluster at %s uses token authentication: connecting with the token from %s",
                     address, source)
            return
        os.environ.pop("RAY_AUTH_MODE", None)   # leave this process as it was
        from ray._raylet import Config
        Config.initialize("")
    raise NasError(f"{where} and the token here ({source}) is not the cluster's; {AUTH_FIX}")


def start_watchdog() -> subprocess.Popen[bytes] | None:
    """Start nas/cluster/ray_watchdog.py for the Ray session this process just started (None if Ray does not say
    which session that is, or off Linux). Closing its stdin - or this process dying - lets it clean up."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ray
        session_dir = ray._private.worker._global_node.get_session_dir_path()
    except Exception as exc:  # a private attribute: without it, no watchdog (Ray's own clean-up remains)
        log.debug("no Ray session folder (%s); no watchdog", exc)
        return None
    script = Path(__file__).with_name("ray_watchdog.py")
    try:
        return subprocess.Popen([sys.executable, "-I", str(script), str(session_dir)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        log.warning("cannot start the Ray watchdog (%s): Ray's agents may outlive a killed search", exc)
        return None


def stop_watchdog(proc: Any, timeout_s: float = 5.0) -> None:
    """Let the watchdog clean up what ray.shutdown left, and wait for it (about a second)."""
    if proc is None:
        return
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        log.debug("the Ray watchdog is still cleaning up")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--runner ray needs Ray: pip install 'ray[default]>=2.9' (or the nas[ray] extra)") from None
    return ray


def _package_dirs() -> list[str]:
    """Our packages, shipped to a remote cluster's workers (runtime_env py_modules)."""
    import importlib.util
    dirs = []
    for name in ("nas", "search_spaces", "latency"):   # located, not imported: `nas` imports this engine
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise NasError(f"cannot locate package {name!r} to ship to the Ray workers")
        dirs.append(str(Path(list(spec.submodule_search_locations)[0])))
    return dirs


@contextlib.contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """ray.init installs its own SIGTERM handler (a C++ stack dump and exit 15); put back the one the
    CLI set, so SIGTERM stops a Ray search like a local one (exit 143, resumable)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is not before and before is not None:
            signal.signal(signal.SIGTERM, before)


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Raise NasError unless something listens at a `HOST:PORT` (or `ray://HOST:PORT`) address:
    ray.init would otherwise retry "Failed to connect to GCS" for many minutes."""
    import socket
    host_port = address.removeprefix("ray://")
    host, sep, port = host_port.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return   # "auto" and other forms: Ray resolves them
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise NasError(f"cannot connect to the Ray cluster at --address {address}: {exc.strerror or exc} "
                       f"(is 'ray start --head' running there?)") from None
