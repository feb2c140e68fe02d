"""CI: a real Prometheus scrapes `lorawatch server` on the demo's database after its canary round.

The drifted demo adapter's KL monitor reads breached (1), the healthy one's not (0), and every
PromQL expression of the shipped Grafana dashboard evaluates without error."""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.prometheus import start_prometheus  # noqa: E402  (the repository's helper, as the tests use it)

GRAFANA = ROOT / "lorawatch" / "server" / "grafana" / "lorawatch.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    port, prom_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="lorawatch-ci-prom."))
    server = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "lorawatch"), "server", "--port", str(port)],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    prometheus = start_prometheus(work, "lorawatch", f"127.0.0.1:{port}", prom_port)
    api = f"http://127.0.0.1:{prom_port}/api/v1"

    def query(expr: str) -> dict:
        return httpx.get(f"{api}/query", params={"query": expr}, timeout=5).json()

    try:
        kl = 'lorawatch_monitor_breached{monitor="logit_kl",adapter=~"support-(drifted|healthy)"}'
        deadline, found = time.time() + 120, {}
        while time.time() < deadline and len(found) < 2:
            time.sleep(1)
            try:
                found = {r["metric"]["adapter"]: float(r["value"][1]) for r in query(kl)["data"]["result"]}
            except (httpx.HTTPError, KeyError, ValueError):
                found = {}
        if len(found) < 2:
            sys.exit(
                f"prometheus did not scrape both demo adapters: {found}; server: {server.stderr.read1()[-2000:]!r}"
            )
        print(f"breached KL per adapter, as Prometheus scraped it: {found}")
        assert found == {"support-drifted": 1.0, "support-healthy": 0.0}, found
        dashboard = json.loads(GRAFANA.read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        for expr in exprs:
            answer = query(re.sub(r"\$adapter", ".*", expr))
            assert answer["status"] == "success", (expr, answer)
        values = httpx.get(f"{api}/label/adapter/values", params={"match[]": "lorawatch_monitor_value"}, timeout=5)
        assert {"support-drifted", "support-healthy", "support-risky"} <= set(values.json()["data"]), values.text
        firing = query('sum by (alertname, adapter) (lorawatch_alerts{state="firing"})')["data"]["result"]
        print(
            f"{len(exprs)} dashboard expressions evaluated; firing alerts: "
            f"{sorted((r['metric']['adapter'], r['metric']['alertname']) for r in firing)}"
        )
    finally:
        prometheus.terminate()
        server.terminate()
        prometheus.wait(timeout=20)
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
