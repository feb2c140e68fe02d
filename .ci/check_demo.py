"""CI: the demo's canary round shows what the demo adapters were built to show."""

import json
import subprocess
import sys

with open(sys.argv[1]) as handle:
    summary = json.load(handle)
assert summary["status"] == "complete", summary["status"]
by = {a["adapter"]: a["monitors"] for a in summary["adapters"]}
healthy, drifted, risky = by["support-healthy"], by["support-drifted"], by["support-risky"]
for name, monitors in by.items():
    print(
        f"{name:16} "
        + "  ".join(f"{k}={v['value']:.3f}{'!' if v['breached'] else ''}" for k, v in sorted(monitors.items()))
    )
assert drifted["logit_kl"]["value"] > 2 * healthy["logit_kl"]["value"], (
    "the drifted adapter's KL should clearly exceed the healthy one's"
)
assert risky["pii_leak_rate"]["breached"] and risky["toxicity_rate"]["breached"], (
    "the risky adapter should breach both budgets"
)
assert not healthy["pii_leak_rate"]["breached"] and not healthy["toxicity_rate"]["breached"], (
    "the healthy adapter should breach neither"
)
alerts = summary["alerts"]
fired = {(a["adapter"], a["rule"]) for a in alerts["firing"]}
for adapter, rule in sorted(fired):
    print(f"alert firing: {rule} on {adapter}")
assert {
    ("support-risky", "pii_leak"),
    ("support-risky", "toxicity_budget"),
    ("support-drifted", "logit_drift"),
} <= fired, fired
assert not any(adapter == "support-healthy" for adapter, _ in fired), "the healthy adapter should raise no alert"
assert ("support-risky", "kpi_drop") in fired, "the risky adapter's seeded CSAT drop should fire kpi_drop"
assert summary["traffic"]["requests"] > 10_000 or summary["traffic"]["requests"] == 0, summary["traffic"]
assert alerts["notifications"]["delivered"] >= 1 and alerts["notifications"]["pending"] == 0, alerts["notifications"]
opened = {i["adapter"] for i in alerts["incidents"]}
print(f"incidents open: {sorted(opened)}")
assert "support-risky" in opened and "support-healthy" not in opened, alerts["incidents"]
# the risky and drifted adapters replaced a safe v0, so on-call has a version to roll back to
listed = subprocess.run(
    [sys.executable, "-m", "lorawatch", "registry", "list", "--json"], capture_output=True, text=True, check=True
)
versions = {}
for row in json.loads(listed.stdout):
    versions.setdefault(row["adapter"], {})[row["version"]] = row.get("aliases") or []
for name in ("support-risky", "support-drifted"):
    assert set(versions[name]) == {"v0", "v1"}, versions[name]
    assert any(a["alias"] == "production" for a in versions[name]["v1"]), versions[name]
assert set(versions["support-healthy"]) == {"v1"}, versions["support-healthy"]
print("demo checks passed")
