"""optuna-dashboard for a sweep's study: served on this machine, and what it shows of a trial.

- `open_studies(url)`: the storage optuna-dashboard reads, checked first: a journal or
  SQLite file must exist (nothing is created where there is none), a database is opened
  without creating Optuna's tables, and the storage must hold a study (the one asked for).
- `Dashboard`: optuna-dashboard's WSGI app (`optuna_dashboard.wsgi`) on 127.0.0.1 unless
  told otherwise, in this thread (`python -m autotimm.dashboard`) or a daemon thread that
  ends with its process (`sweep.dashboard=true`: `start_beside_sweep`).
- `trial_attributes`: the user attributes a finished trial carries for the dashboard
  (status, GPU, model cost), read from its run record.

optuna-dashboard is imported only when a dashboard starts (`pip install 'autotimm[dashboard]'`).
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import threading
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from autotimm.records.results import RecordError, RunRecord, read_record
from autotimm.sweep.storage import JOURNAL, SQLITE, masked, open_storage, storage_file
from autotimm.user_errors import UserError

log = logging.getLogger(__name__)

INSTALL = "pip install 'autotimm[dashboard]'"
HOST, PORT = "127.0.0.1", 8080
# trial user attributes shown by the dashboard (besides `run_dir`, autotimm.sweep.trials)
ATTR_STATUS, ATTR_GPU = "status", "gpu"
ATTR_PARAMS_M, ATTR_GFLOPS = "params_m", "gflops"


class DashboardError(UserError):
    """The dashboard cannot start: no such study or storage, optuna-dashboard missing, ..."""


class PortTakenError(DashboardError):
    """The host and port to listen on are taken (or not this machine's)."""


@dataclass
class Served:
    """A storage opened for the dashboard, its studies, and the one whose page to open."""

    url: str
    storage: Any  # an Optuna BaseStorage
    studies: list[str]
    study_name: str | None  # None: several studies and none asked for (the list page)
    study_id: int | None

    def trial_count(self) -> int | None:
        if self.study_id is None:
            return None
        return len(self.storage.get_all_trials(self.study_id, deepcopy=False))


def _opened(url: str) -> Any:
    """The Optuna storage of `url`; a database is opened without creating tables in it."""
    if url.startswith(JOURNAL):
        return open_storage(url)
    from optuna.storages import RDBStorage

    # an unreachable host fails in seconds, not after the OS's TCP time-out
    connect = {"connect_timeout": 10} if url.startswith("postgresql") else {}
    return RDBStorage(url, engine_kwargs={"connect_args": connect}, skip_table_creation=True)


def open_studies(url: str, study_name: str | None = None) -> Served:
    """The storage at `url` opened for the dashboard; DashboardError (one line) when it has
    no study (or not `study_name`), or its file does not exist (none is created)."""
    path = storage_file(url)
    if path is not None:
        if not path.is_file():
            raise DashboardError(f"no study file at {path} (storage {url})")
        url = f"{JOURNAL if url.startswith(JOURNAL) else SQLITE}{path.resolve()}"
    try:
        storage = _opened(url)
        names = [study.study_name for study in storage.get_all_studies()]
    except Exception as exc:  # a bad URL, a server down, not a study file, ...
        while exc.__cause__ is not None:  # the driver's own words, not Optuna's wrapper
            exc = exc.__cause__
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise DashboardError(f"cannot read the studies in {masked(url)}: {reason}") from None
    if not names:
        raise DashboardError(f"no study in {masked(url)}")
    if study_name is not None and study_name not in names:
        raise DashboardError(f"no study {study_name!r} in {masked(url)}; studies there: {names}")
    name = study_name if study_name is not None else (names[0] if len(names) == 1 else None)
    study_id = storage.get_study_id_from_name(name) if name is not None else None
    return Served(url, storage, names, name, study_id)


def _installed() -> bool:
    try:
        return importlib.util.find_spec("optuna_dashboard") is not None
    except (ImportError, ValueError):  # a broken or blocked installation
        return False


def _app(storage: Any) -> Any:
    """optuna-dashboard's WSGI app (its import takes seconds: scikit-learn, plotly)."""
    try:
        import optuna_dashboard
    except ImportError:
        raise DashboardError(f"optuna-dashboard is not installed: {INSTALL}") from None
    return optuna_dashboard.wsgi(storage)


def _unavailable(reason: str) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [f"optuna-dashboard cannot start: {reason}\n".encode()]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open request never holds the process up


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # no line per request
        pass


class Dashboard:
    """optuna-dashboard for `served`, listening on `host:port` (port 0: any free one).

    The port is taken at once (its URL known); optuna-dashboard is imported when serving
    starts, so a sweep's trials need not wait for it."""

    def __init__(self, served: Served, host: str = HOST, port: int = PORT) -> None:
        if not _installed():
            raise DashboardError(f"optuna-dashboard is not installed: {INSTALL}")
        server = _Server6 if ":" in host else _Server
        try:
            self.server = make_server(host, port, _unavailable("starting"), server, _Quiet)
        except OSError as exc:
            raise PortTakenError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port"
            ) from None
        self.served, self.host = served, host
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The study's page (the list of studies when the storage has several)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        study = self.served.study_id
        page = "" if study is None else f"/studies/{study}"
        return f"http://{host}:{self.server.server_port}/dashboard{page}"

    def serve_forever(self) -> None:
        """Serve in this thread until shut down (DashboardError: no optuna-dashboard)."""
        self.server.set_app(_app(self.served.storage))
        self._serve()

    def _serve(self) -> None:
        try:
            self.server.serve_forever()
        finally:
            self.server.server_close()

    def _serve_beside(self) -> None:
        try:
            self.server.set_app(_app(self.served.storage))
        except Exception as exc:  # the page says why; the process goes on
            log.warning("optuna-dashboard cannot start: %s", exc)
            self.server.set_app(_unavailable(str(exc)))
        self._serve()

    def start(self) -> Dashboard:
        """Serve from a daemon thread (it ends with the process)."""
        self.thread = threading.Thread(
            target=self._serve_beside, name="optuna-dashboard", daemon=True
        )
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()  # returns once the thread's serve_forever has ended
        if self.thread is not None:
            self.thread.join(timeout=5)


def start_beside_sweep(storage: Any, settings: Any, study_name: str | None = None) -> str | None:
    """`sweep.dashboard=true`: the dashboard of the sweep's study in a daemon thread of the
    sweep process (on port 8080, else any free port), its URL printed once; None when not
    asked for or it cannot start (a warning: the sweep goes on without it)."""
    if not settings or not settings.get("dashboard"):
        return None
    try:
        served = open_studies(str(storage), study_name)
        try:
            dashboard = Dashboard(served, HOST, PORT)
        except PortTakenError:  # another dashboard or sweep has it
            dashboard = Dashboard(served, HOST, 0)
    except DashboardError as exc:
        log.warning("sweep.dashboard=true: %s; the sweep goes on without it", exc)
        return None
    dashboard.start()
    print(f"Optuna dashboard of study {study_name!r}: {dashboard.url}", flush=True)
    return dashboard.url


def trial_attributes(run_dir: str, failure: str | None = None) -> dict[str, Any]:
    """A finished trial's user attributes for the dashboard, from its run record:
    `status` ("completed", "pruned at epoch N", "failed: <reason>"), `gpu` (its GPU, or
    "cpu"), and its model's cost `params_m` (millions) and `gflops` (per image) when
    measured. `failure`: why the sweeper failed the trial (None: it did not)."""
    try:
        record = read_record(run_dir)
    except RecordError:
        record = None
    attrs: dict[str, Any] = {ATTR_STATUS: _status(record, failure)}
    if record is not None:
        attrs[ATTR_GPU] = _gpu(record)
        if record.model is not None:
            attrs[ATTR_PARAMS_M] = record.model.params_m
            attrs[ATTR_GFLOPS] = record.model.gflops
    return {key: value for key, value in attrs.items() if value is not None}


def _status(record: RunRecord | None, failure: str | None) -> str:
    if failure is not None:
        return f"failed: {failure}"
    if record is None or record.status == "completed":
        return "completed"
    if record.status == "pruned" and record.pruned is not None:
        fold = getattr(record.pruned, "fold", None)  # a cross-validated trial: after a fold
        where = f"fold {fold}" if fold is not None else f"epoch {record.pruned.epoch}"
        return f"pruned at {where}"
    return f"{record.status}: {record.failure}" if record.failure else record.status


def _gpu(record: RunRecord) -> str:
    gpu = record.gpu if record.gpu is not None else (record.sweep.gpu if record.sweep else None)
    device = record.device if record.device not in (None, "cpu") else None
    if gpu is None:
        return device or "cpu"
    simulated = record.gpu_simulated or bool(record.sweep and record.sweep.gpu_simulated)
    return f"GPU {gpu}" + (" (simulated)" if simulated else "") + (f", {device}" if device else "")
