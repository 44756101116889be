"""Settings both services share, each read from `MODELPORT_<FIELD>`: a deployment has one list
of keys, one data folder and one shutdown grace, whichever service reads them.

    MODELPORT_API_KEYS=key1,key2            # or MODELPORT_API_KEYS_FILE=/etc/modelport/api-keys
    MODELPORT_SHUTDOWN_GRACE_S=30           # deploy/k8s terminationGracePeriodSeconds follows it

What each service can hold at once (in flight, queued) differs by an order of magnitude between
them, so those limits are per service: `MODELPORT_PLATE_MAX_IN_FLIGHT`, ... in its settings.py.
Per-key call counts go to the review queue's database (MODELPORT_DATABASE_URL, else SQLite in
MODELPORT_DATA_DIR): services/core/database.py reads those two.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.core.env_settings import read_env


@dataclass(frozen=True)
class ServerSettings:
    api_keys: tuple[str, ...] = ()  # comma-separated; none (and no file): the API is open
    api_keys_file: str = ""  # one key a line: KEY [reader|reviewer|admin] [monthly quota]
    metrics_require_key: bool = False  # /metrics asks for a key too (Prometheus: bearer_token)
    # SIGTERM: requests in flight may run this long, then end with an error answer (503, or a
    # final error event on a stream). 30 s covers a plate request many times over and a
    # completion of a few hundred tokens; Kubernetes' default grace is 30 s too.
    shutdown_grace_s: float = 30.0
    # A request's body must arrive within this many seconds of its start, else 408 (a client
    # trickling bytes holds a connection, but never an admission slot: core/body_limit.py).
    # 30 s: 40 MB, the plate reader's largest body, at about 11 Mbit/s.
    body_timeout_s: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        return cls(**read_env(cls, "MODELPORT_", environ))
