"""`Cluster`: the Ray a `RayBackend` sends its waves to, joined at an address or started
locally, once, and shut down at the end only if evol started it."""

from __future__ import annotations

import logging
import socket
import threading
from urllib.parse import urlsplit

# Seconds `check_reachable` waits for the cluster's address to accept a connection.
_CONNECT_TIMEOUT = 10.0


class Cluster:
    """The cluster at `address`, or a local Ray of `local_cpus` CPUs (None: all)."""

    def __init__(self, address: str | None, local_cpus: int | None):
        self.address, self.local_cpus = address, local_cpus
        self._lock = threading.Lock()
        self._connected = self._started_ray = False

    def connect(self) -> None:
        """Join the cluster at `address`, or start a local Ray, once (on the loop's thread)."""
        with self._lock:
            if self._connected:
                return
            import ray
            import ray.data

            if self.address is not None:
                check_reachable(self.address)
            if not ray.is_initialized():
                ray.init(
                    address=self.address,
                    num_cpus=self.local_cpus if self.address is None else None,
                    include_dashboard=False,
                    log_to_driver=False,
                    # Ray's INFO and WARNING lines (each dataset started, progress bars off)
                    # would go between evol's own; its errors still show.
                    logging_level=logging.ERROR,
                )
                self._started_ray = True
            ray.data.DataContext.get_current().enable_progress_bars = False
            logging.getLogger("ray.data").setLevel(logging.ERROR)
            self._connected = True

    def disconnect(self) -> None:
        """Shut down the Ray that `connect` started; a cluster joined is left running."""
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False


def check_reachable(address: str) -> None:
    """Refuse at once a cluster address nothing answers at: ray.init would retry it for
    minutes. `auto` and `local` are Ray's own words and are left to it."""
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    if address in ("auto", "local") or parts.hostname is None or parts.port is None:
        return
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=_CONNECT_TIMEOUT).close()
    except OSError as error:
        raise ConnectionError(f"nothing answers at {address} ({error.strerror or error})") from None
