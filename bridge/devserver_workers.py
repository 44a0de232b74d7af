"""A local Synapse with workers, Synapse's own scale-out path: the main process, event persisters
(stream_writers.events) and a worker that sends the appservice transactions
(notify_appservices_from_worker), on PostgreSQL and Redis. Client traffic stays on the main
process. For the tests and benchmarks; a deployment writes the same settings by hand."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.devserver import LocalSynapse, _die_with_parent, free_port

PERSISTERS = ("persister1", "persister2")
APPSERVICE_WORKER = "appservice1"


@dataclass
class LocalSynapseWorkers(LocalSynapse):
    redis_dbid: int = 1
    worker_ports: dict[str, int] = field(default_factory=dict)
    replication_port: int = field(default_factory=free_port)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def write_config(self) -> Path:
        names = (*PERSISTERS, APPSERVICE_WORKER)
        self.worker_ports = self.worker_ports or {name: free_port() for name in names}
        self.extra = {
            **self.extra,
            "instance_map": {"main": {"host": "127.0.0.1", "port": self.replication_port},
                             **{n: {"host": "127.0.0.1", "port": self.worker_ports[n]} for n in PERSISTERS}},
            "stream_writers": {"events": list(PERSISTERS)},
            "notify_appservices_from_worker": APPSERVICE_WORKER,
            "redis": {"enabled": True, "host": "127.0.0.1", "port": 6379, "dbid": self.redis_dbid},
        }
        path = super().write_config()
        config = yaml.safe_load(path.read_text())
        config["listeners"].append({"port": self.replication_port, "bind_addresses": ["127.0.0.1"], "type": "http",
                                    "resources": [{"names": ["replication"]}]})
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        for name in names:
            worker: dict[str, Any] = {
                "worker_app": "synapse.app.generic_worker", "worker_name": name,
                "worker_listeners": [{"type": "http", "port": self.worker_ports[name], "bind_addresses": ["127.0.0.1"],
                                      "resources": [{"names": ["replication"]}]}],
                "worker_log_config": config["log_config"],
                "worker_pid_file": str(self.workdir / f"{name}.pid"),
            }
            (self.workdir / f"{name}.yaml").write_text(yaml.safe_dump(worker, sort_keys=False))
        return path

    def start(self, *, timeout: float = 60.0) -> None:
        super().start(timeout=timeout)  # writes every file, then runs the main process
        for name, port in self.worker_ports.items():
            log = (self.workdir / f"{name}.log").open("ab")
            self.workers[name] = subprocess.Popen(
                [sys.executable, "-m", "synapse.app.generic_worker", "-c", str(self.workdir / "homeserver.yaml"),
                 "-c", str(self.workdir / f"{name}.yaml")], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                start_new_session=True, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            deadline = time.monotonic() + timeout
            while True:
                if self.workers[name].poll() is not None:
                    raise RuntimeError(f"worker {name} exited; see {self.workdir}/{name}.log")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                        break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"worker {name} did not answer within {timeout}s") from None
                    time.sleep(0.1)

    def stop(self) -> None:
        for worker in self.workers.values():
            try:
                os.kill(worker.pid, signal.SIGTERM)
                worker.wait(timeout=15)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        self.workers.clear()
        super().stop()
