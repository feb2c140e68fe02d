"""The read-only JSON API (/api/v1, issue #23) over a real database on each backend: every
endpoint answers what the CLI's --json answers for the same data, pages walk every item once,
tokens are checked, unknown objects are 404s that say what to do, and the OpenAPI document is
valid and lists every endpoint.

The data are made through the service functions (registry, canary run storage and
finalisation, rule evaluation, incidents, request ingestion); no model runs: the canary rows
are what a worker would hand to ``store_rows``."""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate
from safetensors.numpy import save_file
from sqlalchemy import select

from lorawatch import access
from lorawatch.alerts.engine import evaluate
from lorawatch.alerts.silences import add_silence
from lorawatch.db.models import CanaryRun, MonitorResult
from lorawatch.incidents import service as incidents
from lorawatch.monitors import canary as canary_service
from lorawatch.monitors.canary_finalize import finalize_run
from lorawatch.monitors.canary_store import store_rows
from lorawatch.monitors.canary_worker import BatchRows
from lorawatch.monitors.dataset import load_dataset
from lorawatch.monitors.embeddings import to_bytes
from lorawatch.monitors.traffic import ingest_requests
from lorawatch.registry import aliases, bases, versions
from lorawatch.registry.metadata import Lineage, Ownership, Performance, RiskProfile, VersionMetadata
from lorawatch.registry.store import Store
from lorawatch.server.api import MAX_LIMIT
from lorawatch.server.app import create_app
from lorawatch.settings import Settings, load_settings
from tests.tiny_models import write_canary_dataset

API = "/api/v1"
ENDPOINTS = [
    "/adapters",
    "/adapters/{name}",
    "/canary/runs",
    "/canary/runs/{run_id}",
    "/canary/runs/{run_id}/results",
    "/alerts",
    "/alerts/{alert}",
    "/incidents",
    "/incidents/{incident_id}",
    "/latency",
]
LEAKED_EMAIL = "jane.doe@example.com"
SECRET_URL = f"https://hooks.slack.com/services/T0API/B0API/{uuid.uuid4().hex}"

CONFIG = """
[canary]
mmd_permutations = 50
[alerts.route]
receiver = "default"
group_wait = "0s"
[alerts.receivers.oncall]
type = "slack"
url = { env = "LW_TEST_API_SLACK_URL" }
[incidents]
auto_open_severities = ["critical"]
"""


# ---------------------------------------------------------------- data, made as the services make it


def _weights(path: Path, seed: int) -> None:
    save_file({"w": np.random.default_rng(seed).standard_normal((4, 4)).astype(np.float32)}, str(path))


def _base_dir(root: Path) -> Path:
    directory = root / "tiny-base"
    directory.mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 256}
    (directory / "config.json").write_text(json.dumps(config))
    _weights(directory / "model.safetensors", 0)
    return directory


def _adapter_dir(root: Path, name: str, seed: int) -> Path:
    directory = root / name
    directory.mkdir()
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    _weights(directory / "adapter_model.safetensors", seed)
    return directory


def _registry(db, settings: Settings, root: Path) -> None:
    """A base; support v1..v3 (production -> v2, production for acme -> v1, canary -> v3),
    billing v1 (production), search v1 (no alias)."""
    store = Store.from_settings(settings)
    meta = VersionMetadata(
        lineage=Lineage(dataset_hash="sha256:5e1f", commit_sha="4b825dc6", training_run="https://mlflow.local/runs/7"),
        performance=Performance(offline_metrics={"f1": 0.91}, policy_checks={"refusals": "pass"}),
        risk=RiskProfile(bias_assessment="reviewed", data_expires_on=date(2030, 1, 1)),
        ownership=Ownership(team="cx", contacts=["oncall-cx"], review_cadence_days=90),
    )
    with db.session() as s:
        bases.add_base(s, name="tiny", path=_base_dir(root), actor="tester")
        for i, (name, version) in enumerate(
            [("support", "v1"), ("support", "v2"), ("support", "v3"), ("billing", "v1"), ("search", "v1")]
        ):
            versions.register_version(
                s,
                store,
                adapter=name,
                path=_adapter_dir(root, f"{name}-{version}", i + 1),
                base="tiny",
                version=version,
                metadata=meta if name == "support" else None,
                actor="tester",
            )
        aliases.promote(s, adapter="support", version="v1", actor="tester", reason="first release")
        aliases.promote(s, adapter="support", version="v2", actor="tester", reason="better eval")
        aliases.promote(s, adapter="support", version="v1", tenant="acme", actor="tester", reason="acme stays")
        aliases.promote(s, adapter="support", version="v3", alias="canary", actor="tester", reason="try it")
        aliases.promote(s, adapter="billing", version="v1", actor="tester", reason="launch")


def _canary_run(db, settings: Settings, dataset_path: Path, seed: int, *, complete: bool = True) -> int:
    """A run of support@v2 and billing@v1, its rows stored as a worker hands them over (one
    output leaks an e-mail address), then finalised (monitor results, drift tests)."""
    options = canary_service.RunOptions(device="cpu", batch_size=4, max_new_tokens=8)
    run_id = canary_service.create_run(
        db, settings, dataset_path=dataset_path, adapters=["support@v2", "billing@v1"], options=options, actor="tester"
    )
    with db.session() as s:
        keys = {a["key"]: a for a in s.get_one(CanaryRun, run_id).adapters}
    prompts = load_dataset(dataset_path).prompts
    if not complete:
        prompts = prompts[: len(prompts) // 2]
    rng = np.random.default_rng(seed)
    base = [
        {
            "prompt_id": p.id,
            "segment": p.segment,
            "output": f"base answer to {p.id}",
            "new_tokens": 5,
            "latency_ms": 11.5,
            "embedding": to_bytes(rng.standard_normal(8)),
            "toxicity": 0.01,
            "pii_leaks": [],
        }
        for p in prompts
    ]
    results = []
    for meta in keys.values():
        for i, p in enumerate(prompts):
            leaks = i == 2 and meta["adapter"] == "support"
            kl = float(rng.gamma(2.0, 0.05))
            ref_base, ref_adapted = float(-rng.uniform(20, 40)), float(-rng.uniform(20, 40))
            results.append(
                {
                    "prompt_id": p.id,
                    "segment": p.segment,
                    "adapter_version_id": meta["version_id"],
                    "scored_tokens": 6,
                    "scored_on": "reference",
                    "kl_mean": kl,
                    "kl_max": kl * 3,
                    "js_mean": kl / 4,
                    "top1_agreement": float(rng.uniform(0.7, 1.0)),
                    "ref_logprob_base": ref_base,
                    "ref_logprob_adapted": ref_adapted,
                    "ref_logprob_delta": ref_adapted - ref_base,
                    "output": f"write to {LEAKED_EMAIL} today" if leaks else f"{meta['adapter']} answer to {p.id}",
                    "new_tokens": 6,
                    "latency_ms": 14.0,
                    "tokens_per_s": 428.5,
                    "embedding_cosine_distance": float(rng.uniform(0, 0.2)),
                    "embedding": to_bytes(rng.standard_normal(8)),
                    "toxicity": float(rng.uniform(0, 0.1)),
                    "pii_leaks": [{"type": "EMAIL_ADDRESS", "text": LEAKED_EMAIL, "score": 0.99}] if leaks else [],
                }
            )
    rows = BatchRows(
        prompt_ids=[p.id for p in prompts],
        version_ids=[m["version_id"] for m in keys.values()],
        base=base,
        results=results,
        device="cpu",
    )
    store_rows(db, run_id, rows, keys)
    if complete:
        finalize_run(db, settings, run_id, seconds=1.5)
    return run_id


def _alerts_and_incidents(db, settings: Settings) -> dict[str, Any]:
    """Toxicity over budget for support@v2 (critical: an incident opens by itself), billing@v1
    and four other adapters' bots; billing's alert silenced; a manual incident acknowledged,
    noted and resolved; the secret URL pasted into a note."""
    now = datetime.now(UTC)
    with db.session() as s:
        for adapter, version in [("support", "v2"), ("billing", "v1")] + [(f"bot-{c}", "1") for c in "abcd"]:
            s.add(
                MonitorResult(
                    ts=now - timedelta(minutes=1),
                    monitor="toxicity_rate",
                    adapter=adapter,
                    version=version,
                    value=0.4,
                    threshold=0.05,
                    breached=True,
                )
            )
    evaluate(db, settings, now=now)
    add_silence(db, matchers=['adapter="billing"'], duration=timedelta(hours=1), comment="deploy", actor="tester")
    manual = incidents.open_incident(
        db, settings, title="billing answers slowly", adapter="billing", severity="warning", actor="tester"
    )
    incidents.acknowledge(db, manual["id"], actor="tester")
    incidents.add_note(db, manual["id"], f"the hook {SECRET_URL} was rotated", actor="tester")
    incidents.add_action_item(
        db, manual["id"], description="add a latency SLO", owner="cx", due_on=date(2030, 1, 31), actor="tester"
    )
    incidents.resolve(db, settings, manual["id"], actor="tester", note="cache warmed")
    return {"manual_incident": manual["id"]}


def _traffic(db, root: Path) -> None:
    """Requests of the last three hours for support and billing, two tenants, with TTFT."""
    rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    lines = []
    for i in range(400):
        lines.append(
            json.dumps(
                {
                    "ts": (now - timedelta(minutes=float(rng.uniform(15, 170)))).isoformat(),
                    "adapter_id": "support" if i % 3 else "billing",
                    "adapter_version": "v2" if i % 3 else "v1",
                    "tenant": "acme" if i % 2 else "globex",
                    "latency_ms": float(rng.lognormal(5.5, 0.6)),
                    "ttft_ms": float(rng.lognormal(3.5, 0.4)),
                    "status": 500 if i % 50 == 0 else 200,
                }
            )
        )
    path = root / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n")
    ingest_requests(db, path, actor="tester")


@pytest.fixture
def settings(lw_env, tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("LW_TEST_API_SLACK_URL", SECRET_URL)
    (tmp_path / "lorawatch.toml").write_text(CONFIG)
    return load_settings()


@pytest.fixture
def world(db, settings, tmp_path) -> dict[str, Any]:
    """Everything the API shows, on the test's database (the CLI reads the same one)."""
    root = tmp_path / "sources"
    root.mkdir()
    _registry(db, settings, root)
    dataset = write_canary_dataset(tmp_path / "canary.jsonl", n=12)
    runs = [_canary_run(db, settings, dataset, 1), _canary_run(db, settings, dataset, 2)]
    runs.append(_canary_run(db, settings, dataset, 3, complete=False))
    made = _alerts_and_incidents(db, settings)
    _traffic(db, root)
    return {"runs": runs, **made}


@pytest.fixture
def tokens(db) -> dict[str, str]:
    """Tokens by what they are: read, ingest (no read scope), revoked, expired."""
    made = {}
    with db.session() as s:
        for name, scopes in [("read", ["read", "metrics"]), ("ingest", ["ingest"]), ("revoked", ["read"])]:
            made[name] = access.create(s, name=f"t-{name}", scopes=scopes, actor="tester")[1]
        made["expired"] = access.create(
            s, name="t-expired", scopes=["read"], actor="tester", expires_in=timedelta(seconds=-1)
        )[1]
        access.revoke(s, name="t-revoked", actor="tester")
    return made


@pytest.fixture
def api(db, settings, tokens) -> TestClient:
    """The server's app with a read token on every request."""
    return TestClient(create_app(settings, db), headers={"Authorization": f"Bearer {tokens['read']}"})


# ---------------------------------------------------------------- comparing with the CLI


ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def same(value: Any) -> Any:
    """The CLI's JSON as the API writes it: UTC times with Z, NaN as null."""
    if isinstance(value, str) and ISO_UTC.match(value):
        return value[: -len("+00:00")] + "Z"
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: same(v) for k, v in value.items()}
    if isinstance(value, list):
        return [same(v) for v in value]
    return value


def cli_json(cli, *args: Any) -> Any:
    result = cli(*args, "--json")
    assert result.code == 0, result.err
    return same(result.json())


def get(api: TestClient, path: str, **params: Any) -> Any:
    response = api.get(API + path, params=params)
    assert response.status_code == 200, response.text
    assert "+00:00" not in response.text  # every time is UTC with a Z
    return response.json()


def walk(api: TestClient, path: str, **params: Any) -> tuple[list[Any], int]:
    """Every item of a list, following ``next``; and how many pages it took."""
    page = get(api, path, **params)
    items, pages = list(page["items"]), 1
    while page["next"] is not None:
        assert page["next"].startswith(API + path + "?")
        response = api.get(page["next"])
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= params.get("limit", 50)
        items += page["items"]
        pages += 1
    return items, pages


def timeless(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the window of a latency answer (it ends when the request is answered)."""
    return [{k: v for k, v in r.items() if not k.startswith("window_")} for r in rows]


def not_found(api: TestClient, path: str, **params: Any) -> dict[str, Any]:
    response = api.get(API + path, params=params)
    assert response.status_code == 404, response.text
    detail = response.json()["detail"]
    assert detail["message"] and detail["fix"]
    return detail


# ---------------------------------------------------------------- the endpoints


def test_adapters_show_versions_aliases_per_tenant_and_lineage_as_the_registry_does(api, world, cli):
    listed = cli_json(cli, "registry", "list")
    items, pages = walk(api, "/adapters", limit=2)
    assert pages == 2 and [a["adapter"] for a in items] == ["billing", "search", "support"]
    assert [v for a in items for v in a["versions"]] == listed
    support = items[2]
    assert support["base"] == "tiny"
    assert support["aliases"] == [
        {"alias": "canary", "tenant": None, "version": "v3"},
        {"alias": "production", "tenant": None, "version": "v2"},
        {"alias": "production", "tenant": "acme", "version": "v1"},
    ]
    assert items[1]["aliases"] == []  # search: registered, served nowhere

    shown = get(api, "/adapters/support")
    assert {k: v for k, v in shown.items() if k != "aliases"} == cli_json(cli, "registry", "show", "support")
    assert shown["aliases"] == support["aliases"]
    v1 = shown["versions"][0]
    assert v1["lineage"] == {
        "base_model_version": None,
        "dataset_hash": "sha256:5e1f",
        "commit_sha": "4b825dc6",
        "training_run": "https://mlflow.local/runs/7",
    }
    assert v1["risk"]["data_expires_on"] == "2030-01-01" and v1["ownership"]["team"] == "cx"
    assert set(v1["files"]) == {"adapter_config.json", "adapter_model.safetensors"}
    assert [(h["action"], h["alias"], h["tenant"], h["to_version"]) for h in shown["history"]] == [
        ("promote", "production", None, "v1"),
        ("promote", "production", None, "v2"),
        ("promote", "production", "acme", "v1"),
        ("promote", "canary", None, "v3"),
    ]

    detail = not_found(api, "/adapters/suport")
    assert detail["message"] == 'no adapter "suport"; did you mean support?'
    assert "lorawatch registry list" in detail["fix"]


def test_canary_runs_summaries_and_rows_match_the_cli(api, world, cli):
    first, second, running = world["runs"]
    runs, _ = walk(api, "/canary/runs", limit=2)
    assert [r["run"] for r in runs] == [running, second, first]  # newest first
    assert runs == cli_json(cli, "canary", "list")
    assert runs[0]["status"] == "running" and runs[1]["status"] == "complete"

    for run in world["runs"]:
        summary = get(api, f"/canary/runs/{run}")
        assert summary == cli_json(cli, "canary", "show", run)
    monitors = get(api, f"/canary/runs/{second}")["adapters"][1]["monitors"]
    assert {"logit_kl", "embedding_mmd", "toxicity_rate"} <= set(monitors)  # drift tests against run 1
    assert monitors["embedding_mmd"]["details"]["baseline_run"] == first

    exported = cli("canary", "export", second)
    assert exported.code == 0, exported.err
    expected = [json.loads(line) for line in exported.out.splitlines()]
    rows, pages = walk(api, f"/canary/runs/{second}/results", limit=5)
    assert len(rows) == len(expected) == 24 and pages == 5
    assert [(r["adapter_id"], r["prompt_id"]) for r in rows] == [(e["adapter_id"], e["prompt_id"]) for e in expected]
    for row, want in zip(rows, expected):
        assert set(row) == set(want)
        for key, value in want.items():
            # pandas writes floats with 10 decimals
            assert row[key] == (pytest.approx(value, rel=1e-9, abs=1e-9) if isinstance(value, float) else value), key
    assert not any("embedding" in row for row in rows)
    leaked = next(r for r in rows if r["pii_leaks"])
    assert leaked["output"] == "write to <EMAIL_ADDRESS> today" and leaked["pii_leaks"][0]["text"] == "<EMAIL_ADDRESS>"

    billing, _ = walk(api, f"/canary/runs/{second}/results", adapter="billing", limit=MAX_LIMIT)
    assert billing == [r for r in rows if r["adapter_id"] == "billing"]
    support = get(api, f"/canary/runs/{second}/results", adapter="support", version="v2")["items"]
    assert support == [r for r in rows if r["adapter_id"] == "support"] and len(support) == 12
    partial, _ = walk(api, f"/canary/runs/{running}/results", limit=MAX_LIMIT)
    assert len(partial) == 12

    assert not_found(api, "/canary/runs/999")["message"] == "no canary run 999"
    assert not_found(api, "/canary/runs/999/results")["message"] == "no canary run 999"
    detail = not_found(api, f"/canary/runs/{second}/results", adapter="suport")
    assert detail["message"] == f'run {second} did not cover an adapter "suport"; did you mean support?'
    detail = not_found(api, f"/canary/runs/{second}/results", adapter="support", version="v")
    assert detail["message"] == f'run {second} did not cover a version "v" of support; did you mean v2?'


def test_alerts_by_state_adapter_and_severity_match_the_cli(api, world, cli):
    everything, _ = walk(api, "/alerts", state="all", limit=3)
    assert everything == cli_json(cli, "alerts", "list", "--state", "all")
    assert len(everything) >= 6 and len({a["id"] for a in everything}) == len(everything)
    assert get(api, "/alerts", limit=MAX_LIMIT)["items"] == cli_json(cli, "alerts", "list")
    for state in ("firing", "pending", "silenced", "resolved"):
        items, _ = walk(api, "/alerts", state=state, limit=2)
        assert items == cli_json(cli, "alerts", "list", "--state", state), state
    silenced = get(api, "/alerts", state="silenced")["items"]
    assert [a["labels"]["adapter"] for a in silenced] == ["billing"] and silenced[0]["silenced_by"]
    support = get(api, "/alerts", adapter="support")["items"]
    assert support == cli_json(cli, "alerts", "list", "--adapter", "support")
    assert support and all(a["labels"]["adapter"] == "support" for a in support)
    for severity in ("critical", "warning", "info"):
        items = get(api, "/alerts", state="all", severity=severity, limit=MAX_LIMIT)["items"]
        assert items == [a for a in everything if a["severity"] == severity]

    toxic = next(a for a in support if a["rule"] == "toxicity_budget")
    shown = cli_json(cli, "alerts", "show", toxic["id"])
    assert get(api, f"/alerts/{toxic['id']}") == shown
    assert get(api, f"/alerts/{toxic['fingerprint']}") == shown
    assert [e["to"] for e in shown["events"]] == ["firing"]
    muted = get(api, f"/alerts/{silenced[0]['id']}")  # with the silence muting it, as the list says
    assert muted["silenced_by"] == silenced[0]["silenced_by"]

    detail = not_found(api, "/alerts", adapter="suport")
    assert detail["message"] == 'no adapter "suport"; did you mean support?'
    wrong = cli("alerts", "list", "--adapter", "suport")
    assert wrong.code == 2 and detail["message"] in wrong.err
    assert not_found(api, "/alerts/99999")["message"] == "alert '99999' does not exist"
    assert api.get(f"{API}/alerts", params={"severity": "fatal"}).status_code == 422


def test_incidents_and_their_timelines_match_the_cli(api, world, cli):
    everything, _ = walk(api, "/incidents", state="all", limit=1)
    assert everything == cli_json(cli, "incident", "list", "--all")
    assert len(everything) >= 2 and len({i["id"] for i in everything}) == len(everything)
    assert get(api, "/incidents")["items"] == cli_json(cli, "incident", "list")
    assert [i["state"] for i in get(api, "/incidents", state="resolved")["items"]] == ["resolved"]
    assert get(api, "/incidents", state="triggered")["items"] == [i for i in everything if i["state"] == "triggered"]
    assert get(api, "/incidents", state="all", adapter="billing")["items"] == cli_json(
        cli, "incident", "list", "--all", "--adapter", "billing"
    )
    for incident in everything:
        assert get(api, f"/incidents/{incident['id']}") == cli_json(cli, "incident", "show", incident["id"])
    manual = get(api, f"/incidents/{world['manual_incident']}")
    kinds = [e["kind"] for e in manual["timeline"]]
    assert kinds[0] == "opened" and {"acknowledged", "note", "action_item"} <= set(kinds) and kinds[-1] == "state"
    assert manual["state"] == "resolved" and manual["resolved_at"].endswith("Z")
    assert manual["action_items"][0]["due_on"] == "2030-01-31"
    auto = next(i for i in everything if i["source"] != "manual" and i["adapter"] == "support")
    assert "toxicity_budget" in {a["rule"] for a in get(api, f"/incidents/{auto['id']}")["alerts"]}
    assert not_found(api, "/incidents/999")["message"] == "incident 999 does not exist"


def test_latency_per_adapter_matches_lorawatch_latency(api, world, cli):
    page = get(api, "/latency", window="24h")
    assert timeless(page["items"]) == timeless(cli_json(cli, "latency", "--window", "24h"))
    assert [r["adapter"] for r in page["items"]] == ["billing", "support"]
    assert sum(r["count"] for r in page["items"]) == 400
    row = page["items"][1]
    assert row["p50_ms"] < row["p95_ms"] < row["p99_ms"] and row["ttft_p50_ms"] < row["ttft_p99_ms"]
    start = datetime.fromisoformat(row["window_start"])
    assert row["window_end"].endswith("Z") and datetime.fromisoformat(row["window_end"]) - start >= timedelta(hours=24)
    acme = get(api, "/latency", window="6h", tenant="acme", adapter="support")["items"]
    assert timeless(acme) == timeless(
        cli_json(cli, "latency", "--window", "6h", "--tenant", "acme", "--adapter", "support")
    )
    assert get(api, "/latency", window="5m")["items"] == []  # nothing in the last five minutes

    assert not_found(api, "/latency", adapter="suport")["message"] == 'no adapter "suport"; did you mean support?'
    bad = api.get(f"{API}/latency", params={"window": "yesterday"})
    assert bad.status_code == 400
    assert bad.json()["detail"] == {
        "message": "window 'yesterday' is not a duration longer than zero",
        "where": None,
        "fix": "write e.g. 30m, 6h, 7d, 2w or 1h30m",
    }


def test_secrets_pii_and_embeddings_never_leave(api, world, cli):
    answers = [api.get(f"{API}/incidents/{world['manual_incident']}").text]
    for path in ENDPOINTS:
        filled = path.format(name="support", run_id=world["runs"][1], alert=1, incident_id=1)
        answers.append(api.get(API + filled, params={} if "{" in path else {"limit": MAX_LIMIT}).text)
    answers += [api.get(f"{API}/canary/runs/{run}/results", params={"limit": MAX_LIMIT}).text for run in world["runs"]]
    for text in answers:
        assert SECRET_URL not in text and "B0API" not in text
        assert LEAKED_EMAIL not in text
        assert '"embedding"' not in text
    note = next(e for e in get(api, f"/incidents/{world['manual_incident']}")["timeline"] if e["kind"] == "note")
    assert "<redacted>" in note["message"]
    assert note == next(
        e for e in cli_json(cli, "incident", "show", world["manual_incident"])["timeline"] if e["kind"] == "note"
    )


def test_pages_walk_every_item_once_and_limits_are_bounded(api, world):
    for path, key, params in [
        ("/adapters", "adapter", {}),
        ("/canary/runs", "run", {}),
        (f"/canary/runs/{world['runs'][0]}/results", None, {}),
        ("/alerts", "id", {"state": "all"}),
        ("/incidents", "id", {"state": "all"}),
        ("/latency", "adapter", {}),
    ]:
        whole = get(api, path, limit=MAX_LIMIT, **params)
        assert whole["next"] is None and whole["offset"] == 0 and whole["limit"] == MAX_LIMIT
        for limit in (1, 2, 7):
            items, pages = walk(api, path, limit=limit, **params)
            assert timeless(items) == timeless(whole["items"]), (path, limit)
            assert pages == max(1, math.ceil(len(items) / limit)), (path, limit)
            ids = [i[key] for i in items] if key else [(i["adapter_id"], i["prompt_id"]) for i in items]
            assert len(set(ids)) == len(ids)
        beyond = get(api, path, limit=5, offset=len(whole["items"]) + 3, **params)
        assert beyond["items"] == [] and beyond["next"] is None
    for bad in ({"limit": 0}, {"limit": MAX_LIMIT + 1}, {"offset": -1}):
        assert api.get(f"{API}/alerts", params=bad).status_code == 422


def test_every_endpoint_refuses_missing_wrong_revoked_expired_and_unscoped_tokens(db, settings, tokens):
    client = TestClient(create_app(settings, db))
    paths = [p.format(name="x", run_id=1, alert=1, incident_id=1) for p in ENDPOINTS]
    refused = {
        "none": {},
        "wrong": {"Authorization": "Bearer lw_" + "x" * 43},
        "not ours": {"Authorization": "Bearer hunter2"},
        "basic": {"Authorization": f"Basic {tokens['read']}"},
        "revoked": {"Authorization": f"Bearer {tokens['revoked']}"},
        "expired": {"Authorization": f"Bearer {tokens['expired']}"},
        "no read scope": {"Authorization": f"Bearer {tokens['ingest']}"},
    }
    for path in paths:
        for why, headers in refused.items():
            response = client.get(API + path, headers=headers)
            assert response.status_code == 401, (path, why)
            assert response.headers["www-authenticate"].startswith("Bearer"), (path, why)
            assert "read scope" in response.json()["detail"]
        answer = client.get(API + path, headers={"Authorization": f"Bearer {tokens['read']}"})
        assert answer.status_code in (200, 404), (path, answer.text)
    with db.session() as s:
        used = {t["name"]: t["last_used_at"] for t in access.listing(s)}
    assert used["t-read"] is not None and used["t-ingest"] is None


def test_the_openapi_document_is_valid_and_describes_every_endpoint(db, settings):
    client = TestClient(create_app(settings, db))
    doc = client.get(f"{API}/openapi.json").json()
    validate(doc)
    assert sorted(p for p in doc["paths"] if p.startswith(API)) == sorted(API + p for p in ENDPOINTS)
    schemas = doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path in ENDPOINTS:
        operation = doc["paths"][API + path]["get"]
        assert operation["security"] == [{"HTTPBearer": []}], path
        assert "401" in operation["responses"], path
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
        fields = schemas[ok]["properties"]
        if "{" not in path:  # a list: one page
            assert {"items", "next", "limit", "offset"} <= set(fields), path
            params = {p["name"]: p for p in operation["parameters"]}
            assert params["limit"]["schema"]["maximum"] == MAX_LIMIT, path
        else:
            assert "404" in operation["responses"], path
            assert operation["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
                "/ErrorResponse"
            )
    assert "from" in schemas["AlertEventOut"]["properties"]
    assert set(schemas["ResultRow"]["properties"]) >= {"kl_mean", "output", "base_output", "pii_leaks"}
    assert not any(name == "embedding" for s in schemas.values() for name in s.get("properties", {}))
    assert {"state", "adapter", "severity"} <= {p["name"] for p in doc["paths"][f"{API}/alerts"]["get"]["parameters"]}
    assert {"window", "adapter", "tenant"} <= {p["name"] for p in doc["paths"][f"{API}/latency"]["get"]["parameters"]}


def test_an_empty_database_answers_empty_pages(api):
    for path in ("/adapters", "/canary/runs", "/alerts", "/incidents", "/latency"):
        assert get(api, path) == {"items": [], "next": None, "limit": 50, "offset": 0}


def test_canary_runs_are_read_without_loading_embeddings(api, world, db):
    """The results page leaves the embedding columns unread (a run's embeddings are most of its bytes)."""
    from sqlalchemy import event

    statements: list[str] = []
    engine = db.engine

    def remember(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", remember)
    try:
        get(api, f"/canary/runs/{world['runs'][0]}/results", limit=5)
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    reads = [s for s in statements if "FROM canary_results" in s]
    assert reads and not any(re.search(r"\.embedding\b", s) for s in reads)
    with db.session() as s:
        assert s.scalar(select(CanaryRun.status).where(CanaryRun.id == world["runs"][0])) == "complete"
