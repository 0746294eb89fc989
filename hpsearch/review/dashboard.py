"""``mode=dashboard``: optuna-dashboard on the search's storage, with its artifact store.

The dashboard reads the same ``storage.url`` the workers write, so it shows a running study
live: every trial's metrics are user attrs (``hpsearch.trial.METRICS``), its FT validation
accuracy per epoch the intermediate values, and the study's user attr ``config`` the composed
config. The artifact store at ``storage.artifacts`` is attached, so files put there (the
report's summary, table and plots; checkpoints) can be browsed and downloaded.

It listens on ``dashboard.host``:``dashboard.port``, 127.0.0.1:8080 by default: only this
machine can reach it unless the host is set to an outside address (e.g. 0.0.0.0 in a container).
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from omegaconf import DictConfig
from optuna.artifacts import FileSystemArtifactStore

from hpsearch.errors import HpsearchError
from hpsearch.study.storage import open_storage, safe_url
from hpsearch.tables import name_list

log = logging.getLogger("hpsearch")


def open_artifact_store(path: str) -> FileSystemArtifactStore:
    """The file-system artifact store at ``path`` (``storage.artifacts``), created if missing."""
    base = Path(path).expanduser()
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HpsearchError(
            f"storage.artifacts={path!r}: cannot create the artifact folder ({err.strerror})"
        ) from None
    return FileSystemArtifactStore(str(base))


def study_url(host: str, port: int, study_id: int | None) -> str:
    """The address to open in a browser: the study's page, or the list of studies."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:  # an IPv6 literal
        shown = f"[{shown}]"
    base = f"http://{shown}:{port}/dashboard"
    return f"{base}/studies/{study_id}" if study_id is not None else base


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # no line per request
        pass


class _ServerV6(WSGIServer):
    address_family = socket.AF_INET6


def bind_server(host: str, port: int) -> WSGIServer:
    """A WSGI server listening on ``host``:``port`` (no app yet); a port that is taken, an
    address that is not this machine's or a missing permission is an HpsearchError, raised
    before anything is printed."""
    server_class = _ServerV6 if ":" in host else WSGIServer
    try:
        return make_server(host, port, None, server_class, _QuietHandler)
    except OSError as err:
        raise HpsearchError(
            f"dashboard.port={port}/dashboard.host={host!r}: cannot listen "
            f"({err.strerror or err}); choose another port or host"
        ) from None


def serve_dashboard(cfg: DictConfig) -> None:
    """Serve optuna-dashboard until interrupted; a port that is taken is an HpsearchError,
    raised before the first line is printed."""
    import optuna_dashboard

    url = str(cfg.storage.url)
    storage = open_storage(url)
    store = open_artifact_store(str(cfg.storage.artifacts))
    host, port = str(cfg.dashboard.host), int(cfg.dashboard.port)
    server = bind_server(host, port)
    server.set_app(optuna_dashboard.wsgi(storage, artifact_store=store))
    name = str(cfg.study.name)
    ids = {s.study_name: s._study_id for s in storage.get_all_studies()}
    if name not in ids:
        log.info(
            "study %r is not in %s yet (studies: %s); the dashboard lists it once a search "
            "creates it",
            name,
            safe_url(url),
            name_list(sorted(ids)),
        )
    log.info(
        "optuna-dashboard on %s: open %s (artifacts: %s); Ctrl-C stops it",
        safe_url(url),
        study_url(host, port, ids.get(name)),
        cfg.storage.artifacts,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
