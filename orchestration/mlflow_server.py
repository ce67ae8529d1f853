"""`partita mlflow serve` and `partita mlflow ui`: a local tracking server, and the UI of the embedded store.

Two stores under PARTITA_HOME, on purpose:

    $PARTITA_HOME/mlflow.db          the embedded store: runs logged with MLFLOW_TRACKING_URI unset.
                                     `partita mlflow ui` opens it.
    $PARTITA_HOME/mlflow-server.db   the tracking server's own store. `partita mlflow serve` serves it
                                     over HTTP; clients set MLFLOW_TRACKING_URI=http://127.0.0.1:5000.
    $PARTITA_HOME/mlartifacts/       artifacts of both (embedded: mlartifacts/<experiment name>/<run id>/,
                                     server: mlartifacts/<experiment id>/<run id>/; run ids never collide).

The server does not reuse mlflow.db because experiments created in the embedded store record
file:// artifact locations: a Ray worker on another machine logging into such an experiment through
the server would write its artifacts to its own disk. Every experiment created through the server
gets a proxied `mlflow-artifacts:/` location (`--artifacts-destination`), so a client needs nothing
but MLFLOW_TRACKING_URI, wherever it runs. The cluster deployment (k8s/base/mlflow, PostgreSQL
backend) follows the same rule; see mlflow/README.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from components.errors import PartitaError
from orchestration import paths

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_WORKERS = 2  # uvicorn workers; MLflow's own default (4) is a lot for a laptop
LOOPBACK = ("127.0.0.1", "localhost", "::1")

# MLflow 3 starts a pool of "job execution" consumers (GenAI evaluation, prompt optimisation) next
# to the server: seven more Python processes that partita never uses, which double the start-up
# time on two cores. Off unless the caller's environment says otherwise.
SERVER_ENV_DEFAULTS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def embedded_db() -> Path:
    return paths.home() / "mlflow.db"


def server_db() -> Path:
    return paths.home() / "mlflow-server.db"


def artifacts_dir() -> Path:
    return paths.home() / "mlartifacts"


def client_uri(host: str, port: int) -> str:
    """The MLFLOW_TRACKING_URI with which this machine reaches a server bound to host:port."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def server_command(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    backend_store_uri: str | None = None,
    artifacts_destination: str | Path | None = None,
    workers: int | None = DEFAULT_WORKERS,
    allowed_hosts: str | None = None,
) -> list[str]:
    """The `mlflow server` command line (defaults: the server store and artifacts under PARTITA_HOME)."""
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", host,
        "--port", str(port),
        "--backend-store-uri", backend_store_uri or f"sqlite:///{server_db()}",
        "--artifacts-destination", str(artifacts_destination or artifacts_dir()),
    ]  # fmt: skip
    if workers:
        command += ["--workers", str(workers)]
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    return command


def _environment() -> dict[str, str]:
    return {**SERVER_ENV_DEFAULTS, **os.environ}


def _check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise PartitaError(f"port {port} is not a TCP port", "pass --port between 1 and 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind((host, port))
        except OSError as err:
            raise PartitaError(
                f"cannot listen on {host}:{port} ({err.strerror or err})",
                "pass --port with a free port, or stop what is listening there "
                f"(if it is an MLflow server already, just export MLFLOW_TRACKING_URI={client_uri(host, port)})",
            ) from None


def _prepare_local_store(backend_store_uri: str | None, artifacts_destination: str | Path | None) -> None:
    uri = backend_store_uri or f"sqlite:///{server_db()}"
    if uri.startswith("sqlite:///"):
        _mkdir(Path(uri.removeprefix("sqlite:///")).parent)
    destination = str(artifacts_destination or artifacts_dir())
    if "://" not in destination:
        _mkdir(Path(destination))


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PartitaError(f"cannot create {folder} ({err.strerror or err})", "set PARTITA_HOME to a writable folder") from None


def start(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    backend_store_uri: str | None = None,
    artifacts_destination: str | Path | None = None,
    workers: int | None = DEFAULT_WORKERS,
    allowed_hosts: str | None = None,
    log_path: Path | None = None,
    foreground: bool = False,
) -> subprocess.Popen:
    """Start `mlflow server`; pair with `wait_ready` and `stop`.

    In the background (the default) the server gets its own process group, so `stop` ends the
    server and every process it started; its output goes to `log_path` (or is discarded).
    """
    _check_port(host, port)
    _prepare_local_store(backend_store_uri, artifacts_destination)
    command = server_command(host, port, backend_store_uri, artifacts_destination, workers, allowed_hosts)
    if foreground:
        return subprocess.Popen(command, env=_environment())
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            command, env=_environment(), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        if log_path:
            output.close()


def wait_ready(uri: str, process: subprocess.Popen, timeout: float = 120.0, log_path: Path | None = None) -> None:
    """Block until `uri`/health answers; fail if the server exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise PartitaError(f"mlflow server exited with code {process.returncode} before it answered{_tail(log_path)}")
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise PartitaError(f"mlflow server at {uri} did not answer within {timeout:.0f} s{_tail(log_path)}")
        time.sleep(0.25)


def _tail(log_path: Path | None, lines: int = 15) -> str:
    if not log_path or not Path(log_path).is_file():
        return ""
    text = Path(log_path).read_text(errors="replace").splitlines()[-lines:]
    return ":\n" + "\n".join(text)


def stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """End a server started by `start`, and in the background case every process it started.

    SIGTERM first (MLflow shuts down cleanly), SIGKILL after `timeout`.
    """
    # a background server leads its own process group (start_new_session); a foreground one does not
    group = process.pid if _group_alive(process.pid) else None

    def send(signum: int) -> None:
        if group is not None:
            _signal_group(group, signum)
        elif process.poll() is None:
            process.send_signal(signum)

    send(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(timeout=10)
    if group is not None:  # children that outlived the server
        deadline = time.monotonic() + 5
        while _group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(group):
            _signal_group(group, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_foreground(process: subprocess.Popen) -> int:
    try:
        return process.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the server too (same process group): give it time to shut down cleanly.
        try:
            process.wait(timeout=20)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            process.kill()
            process.wait()
        return 0


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    backend_store_uri: str | None = None,
    artifacts_destination: str | Path | None = None,
    workers: int | None = DEFAULT_WORKERS,
    allowed_hosts: str | None = None,
) -> int:
    """Run a tracking server in the foreground until Ctrl-C; prints the MLFLOW_TRACKING_URI to export."""
    backend = backend_store_uri or f"sqlite:///{server_db()}"
    destination = str(artifacts_destination or artifacts_dir())
    uri = client_uri(host, port)
    print(f"MLflow tracking server: store {backend}, artifacts {destination}")
    if host not in LOOPBACK:
        print(
            f"warning: listening on {host}: MLflow has no authentication, so anyone who can reach port {port} "
            "can read and change every run. Bind to 127.0.0.1 unless the network is trusted.",
            file=sys.stderr,
        )
        print(
            f"From other machines: http://<this machine's address>:{port}. MLflow answers only requests addressed to "
            f"localhost or a private IP unless --allowed-hosts lists the name (e.g. {socket.gethostname()}:{port}).",
            file=sys.stderr,
        )
    process = start(host, port, backend, destination, workers, allowed_hosts, foreground=True)
    try:
        wait_ready(uri, process, timeout=300)
    except KeyboardInterrupt:
        return _run_foreground(process)
    except PartitaError:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)
        raise
    print("\nReady. In the shell that runs experiments or `ray start`:\n")
    print(f"    export MLFLOW_TRACKING_URI={uri}\n")
    print(f"UI: {uri}   (Ctrl-C stops the server)", flush=True)
    code = _run_foreground(process)
    return 0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code


def ui(port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, workers: int | None = 1) -> int:
    """Open the embedded store ($PARTITA_HOME/mlflow.db) in MLflow's UI, in the foreground until Ctrl-C."""
    database = embedded_db()
    if not database.is_file():
        raise PartitaError(
            f"no embedded MLflow database at {database}",
            "run an experiment first (make demo), or set PARTITA_HOME to the folder that holds mlflow.db",
        )
    remote = os.environ.get("MLFLOW_TRACKING_URI", "")
    if remote.startswith(("http://", "https://")):
        print(f"note: MLFLOW_TRACKING_URI is {remote}: runs logged from this shell go there; open it in a browser.")
    _check_port(host, port)
    command = server_command(host, port, f"sqlite:///{database}", artifacts_dir(), workers)
    command[command.index("server")] = "ui"
    print(f"MLflow UI for {database}: {client_uri(host, port)}   (Ctrl-C stops it)", flush=True)
    code = _run_foreground(subprocess.Popen(command, env=_environment()))
    return 0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `partita mlflow serve` and `partita mlflow ui` to the `partita` command line."""
    mlflow = subparsers.add_parser("mlflow", help="a local MLflow tracking server, or the UI of the embedded store")
    commands = mlflow.add_subparsers(dest="mlflow_command", required=True)

    serve_parser = commands.add_parser(
        "serve",
        help="run a tracking server (SQLite store and artifacts under PARTITA_HOME) and print the URI to export",
    )
    serve_parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default 127.0.0.1: this machine only)")
    serve_parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default 5000)")
    serve_parser.add_argument("--backend-store-uri", help="default sqlite:///$PARTITA_HOME/mlflow-server.db; postgresql://... for a team")
    serve_parser.add_argument("--artifacts-destination", help="where proxied artifacts go (default $PARTITA_HOME/mlartifacts; s3://... works)")
    serve_parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help=f"server worker processes (default {DEFAULT_WORKERS})")
    serve_parser.add_argument("--allowed-hosts", help="Host headers to accept when serving beyond localhost, e.g. 'myhost,myhost:5000'")
    serve_parser.set_defaults(run=_serve)

    ui_parser = commands.add_parser("ui", help="open the embedded store ($PARTITA_HOME/mlflow.db) in MLflow's UI")
    ui_parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default 5000)")
    ui_parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default 127.0.0.1)")
    ui_parser.set_defaults(run=_ui)


def _serve(args: argparse.Namespace) -> int:
    return serve(args.host, args.port, args.backend_store_uri, args.artifacts_destination, args.workers, args.allowed_hosts)


def _ui(args: argparse.Namespace) -> int:
    return ui(args.port, args.host)
