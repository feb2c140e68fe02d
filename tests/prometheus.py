"""A real Prometheus on loopback, scraping one target every second (tests and CI checks)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def start_prometheus(work: Path, job: str, target: str, port: int) -> subprocess.Popen:
    """``prometheus`` scraping ``target`` (host:port) as ``job``, listening on ``port``; its
    configuration and storage live in ``work``. The caller terminates it."""
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
        f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
    )
    return subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
