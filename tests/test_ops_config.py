"""The operations configuration under config/: Prometheus, its alert rules, Grafana.

Checked here:

* every PromQL expression of the Grafana dashboard and of the alert rules names only
  series the gateway exports (``Metrics().names()``) or that Prometheus makes itself
  (``up``), found by a small PromQL tokenizer that is itself tested;
* the dashboard is well-formed Grafana JSON: unique panel ids, a query on every panel
  (row headings aside), one data source uid that is the provisioned one, a panel per
  response-time stage; its queries parse (promtool) and count a series' first events;
* prometheus.yml finds its targets in config/targets/*.json (file-based discovery) and
  loads alerts.yml; promtool discovers exactly the gateways the demo wrote there; the
  alert rules are the ones operators were promised, each unit-tested both ways;
* ``promtool`` accepts the configuration and the rules, and the rule unit tests pass.
  Without promtool on PATH those tests are skipped, unless FPG_REQUIRE_PROMTOOL is set
  (as CI does): then a missing promtool is a failure.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli.demo import COUNTRIES, setup_only
from gateway.config import load_config
from gateway.metrics import STAGES, Metrics

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
PROMETHEUS_YML = CONFIG / "prometheus.yml"
ALERTS_YML = CONFIG / "alerts.yml"
ALERTS_TEST_YML = CONFIG / "alerts_test.yml"
DASHBOARD_JSON = CONFIG / "grafana" / "dashboards" / "fpg-gateway.json"
DATASOURCES_YML = CONFIG / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS_YML = CONFIG / "grafana" / "provisioning" / "dashboards" / "fpg.yml"

#: The demo federation's metrics listeners (gateway demo, docker-compose.yml).
#: Series Prometheus adds to every scrape target itself.
PROMETHEUS_OWN = frozenset({"up"})

# ---------------------------------------------------------------------------------------
# A PromQL tokenizer that finds the metric names an expression selects.

#: PromQL functions (Prometheus 2.x and 3.x); only a name followed by "(" is a call.
FUNCTIONS = frozenset("""
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil
    changes clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week
    day_of_year days_in_month deg delta deriv double_exponential_smoothing end exp floor
    histogram_avg histogram_count histogram_fraction histogram_quantile histogram_stddev
    histogram_stdvar histogram_sum holt_winters hour idelta increase info irate label_join
    label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time
    minute month pi predict_linear present_over_time quantile_over_time rad rate resets
    round scalar sgn sin sinh sort sort_by_label sort_by_label_desc sort_desc sqrt start
    stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp vector year
""".split())
#: Words the PromQL lexer always reads as keywords (case-insensitively), never as names.
KEYWORDS = frozenset("""
    sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk
    limit_ratio and or unless atan2 bool offset by without on ignoring group_left
    group_right inf nan
""".split())
#: Keywords that may be followed by a parenthesised list of label names.
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"\.?[0-9][0-9A-Za-z_.]*")  # numbers, hex, durations such as 1h30m
_GRAFANA_VAR = re.compile(r"\$(?:\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)")
_MATCH_OPS = ("=~", "!~", "!=", "=")


class PromQLError(ValueError):
    pass


def _end_of_string(expr: str, start: int) -> int:
    """Index just past the string literal that opens at ``start``."""
    quote = expr[start]
    i = start + 1
    while i < len(expr):
        if expr[i] == "\\" and quote != "`":
            i += 2
            continue
        if expr[i] == quote:
            return i + 1
        i += 1
    raise PromQLError(f"unterminated string at {start}: {expr!r}")


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return body if literal[0] == "`" else re.sub(r"\\(.)", r"\1", body)


def _skip_space(expr: str, i: int) -> int:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return i


def _matchers(expr: str, start: int) -> tuple[int, set[str]]:
    """Read the ``{...}`` that opens at ``start``: its end and any metric name it sets
    (``__name__="x"``, or a bare quoted name as Prometheus 3 allows)."""
    names: set[str] = set()
    i = start + 1
    while True:
        i = _skip_space(expr, i)
        if i >= len(expr):
            raise PromQLError(f"unclosed '{{' at {start}: {expr!r}")
        if expr[i] == "}":
            return i + 1, names
        if expr[i] == ",":
            i += 1
            continue
        if expr[i] in "\"'`":
            end = _end_of_string(expr, i)
            label = _unquote(expr[i:end])
        elif m := _IDENT.match(expr, i):
            end, label = m.end(), m.group()
        else:
            raise PromQLError(f"unexpected {expr[i]!r} in label matchers: {expr!r}")
        i = _skip_space(expr, end)
        op = next((o for o in _MATCH_OPS if expr.startswith(o, i)), None)
        if op is None:  # {"metric_name", ...}
            names.add(label)
            continue
        i = _skip_space(expr, i + len(op))
        if i >= len(expr) or expr[i] not in "\"'`":
            raise PromQLError(f"label {label} needs a quoted value: {expr!r}")
        end = _end_of_string(expr, i)
        if label == "__name__":
            if op != "=":
                raise PromQLError(f"cannot check a metric name matched with {op}: {expr!r}")
            names.add(_unquote(expr[i:end]))
        i = end


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Skipped: strings, label matchers (except a metric name given as ``__name__="..."``),
    ranges and subqueries in ``[...]``, numbers and durations, comments, Grafana
    variables (``$name``, ``${name}``), keywords with the label lists of
    by/without/on/ignoring/group_left/group_right, and function calls. A name followed by
    "(" that is no PromQL function is an error, as are unbalanced brackets.
    """
    names: set[str] = set()
    depth = 0
    i = 0
    while i < len(expr):
        c = expr[i]
        if c.isspace():
            i += 1
        elif c == "#":
            newline = expr.find("\n", i)
            i = len(expr) if newline < 0 else newline
        elif c in "\"'`":
            i = _end_of_string(expr, i)
        elif c == "$":
            m = _GRAFANA_VAR.match(expr, i)
            if m is None:
                raise PromQLError(f"stray '$' at {i}: {expr!r}")
            i = m.end()
        elif c == "{":
            i, found = _matchers(expr, i)
            names |= found
        elif c == "[":
            level, j = 0, i
            while j < len(expr):
                level += {"[": 1, "]": -1}.get(expr[j], 0)
                j += 1
                if level == 0:
                    break
            if level:
                raise PromQLError(f"unclosed '[' at {i}: {expr!r}")
            i = j
        elif c == "]" or c == "}":
            raise PromQLError(f"unbalanced {c!r} at {i}: {expr!r}")
        elif c == "(":
            depth += 1
            i += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise PromQLError(f"unbalanced ')' at {i}: {expr!r}")
            i += 1
        elif m := _NUMBER.match(expr, i):
            i = m.end()
        elif m := _IDENT.match(expr, i):
            word, i = m.group(), m.end()
            after = _skip_space(expr, i)
            calls = after < len(expr) and expr[after] == "("
            if word.lower() in KEYWORDS:
                if word.lower() in LABEL_LISTS and calls:
                    close = expr.find(")", after)
                    if close < 0:
                        raise PromQLError(f"unclosed label list after {word}: {expr!r}")
                    i = close + 1
            elif calls:
                if word not in FUNCTIONS:
                    raise PromQLError(f"unknown PromQL function {word}(): {expr!r}")
            else:
                names.add(word)
        else:
            i += 1  # operators, commas, '@', ':'
    if depth:
        raise PromQLError(f"unbalanced '(' in {expr!r}")
    return names


@pytest.mark.parametrize(("expr", "expected"), [
    ("up", {"up"}),
    ('up{job="fpg-gateway"} == 0', {"up"}),
    ("fpg_ledger_checkpoint_age_seconds > 600 and fpg_ledger_unchecked_entries > 0",
     {"fpg_ledger_checkpoint_age_seconds", "fpg_ledger_unchecked_entries"}),
    ('histogram_quantile(0.95, sum by (le, priority) '
     '(rate(fpg_response_seconds_bucket{stage="read", gateway=~"$gateway"}[$__rate_interval])))',
     {"fpg_response_seconds_bucket"}),
    ("sum(rate(a_total[5m])) by (le) / ignoring (x) group_left (version) b_info",
     {"a_total", "b_info"}),
    ("increase(c_total[30m]) > 0 or (c_total > 0 unless c_total offset 30m)", {"c_total"}),
    ("c_total offset $window", {"c_total"}),
    ("max_over_time(deriv(g[5m])[1h:1m]) > bool 0", {"g"}),
    ('label_replace(up, "dst", "fpg_not_a_metric", "job", "(.*)")', {"up"}),
    ('{__name__="fpg_ledger_size", job="x"}', {"fpg_ledger_size"}),
    ('{"fpg_ledger_size"}', {"fpg_ledger_size"}),
    ('topk(3, x{a="}{[(\\"#"}) # fpg_in_a_comment\n + Inf - NaN * 1e-3 + 0x1F', {"x"}),
    ("SUM BY (le) (y) AND on() z @ start()", {"y", "z"}),
    ("rate", {"rate"}),  # a metric may be called "rate"; only rate(...) is the function
    ("vector(1)", set()),
])
def test_metric_names(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


@pytest.mark.parametrize("expr", [
    "histogram_quantil(0.5, x)",  # misspelt function
    "sum(x",
    "x)",
    "x{a=\"b\"",
    'x{a="b}',
    "x[5m",
    "x]",
    '{__name__=~"fpg_.*"}',  # cannot be checked
])
def test_metric_names_refuses(expr: str) -> None:
    with pytest.raises(PromQLError):
        metric_names(expr)


# ---------------------------------------------------------------------------------------
# Reading the files.

def _yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _dashboard() -> dict[str, Any]:
    with DASHBOARD_JSON.open(encoding="utf-8") as f:
        return json.load(f)


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = [(f"panel {p['id']} ({p.get('title')}) target {t.get('refId')}", t["expr"])
             for p in _panels(dashboard) for t in p.get("targets", []) if "expr" in t]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"\s*(label_values|query_result)\((.*)\)\s*", query, re.S)
        assert m, f"variable {var['name']}: unexpected query {query!r}"
        inner = m.group(2)
        if m.group(1) == "label_values":
            inner, _, label = inner.rpartition(",")
            assert inner and label.strip(), f"variable {var['name']}: {query!r}"
        found.append((f"variable {var['name']}", inner))
    return found


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml(ALERTS_YML)["groups"] for rule in group["rules"]]


def _alert_queries() -> list[tuple[str, str]]:
    return [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in _alert_rules()]


def exported_names() -> set[str]:
    """What a query may name: the gateway's sample names, and ``up``."""
    return Metrics().names() | PROMETHEUS_OWN


def unknown_metrics(queries: list[tuple[str, str]], known: set[str]) -> list[str]:
    """``where: name`` for every metric a query names that is not in ``known``."""
    return [f"{where}: {name}" for where, expr in queries
            for name in sorted(metric_names(expr) - known)]


# ---------------------------------------------------------------------------------------
# Every query names metrics that exist.

def test_dashboard_names_only_exported_metrics() -> None:
    queries = _dashboard_queries(_dashboard())
    assert len(queries) > 20
    assert unknown_metrics(queries, exported_names()) == []


def test_alerts_name_only_exported_metrics() -> None:
    assert unknown_metrics(_alert_queries(), exported_names()) == []


def test_a_panel_naming_a_missing_metric_is_caught() -> None:
    dashboard = copy.deepcopy(_dashboard())
    panel = next(p for p in _panels(dashboard)
                 if any("fpg_outbox_depth" in t.get("expr", "") for t in p.get("targets", [])))
    for t in panel["targets"]:
        t["expr"] = t["expr"].replace("fpg_outbox_depth", "fpg_outbox_length")
    missing = unknown_metrics(_dashboard_queries(dashboard), exported_names())
    assert missing == [f"panel {panel['id']} ({panel['title']}) target A: fpg_outbox_length"]
    # ... and so is a histogram's bare family name, which is no series of its own.
    assert unknown_metrics([("q", "rate(fpg_response_seconds[5m])")],
                           exported_names()) == ["q: fpg_response_seconds"]


def test_an_alert_naming_a_missing_metric_is_caught() -> None:
    queries = [(w, e.replace("fpg_partner_up", "fpg_partner_alive")) for w, e in _alert_queries()]
    assert unknown_metrics(queries, exported_names()) == ["rule PartnerDown: fpg_partner_alive"]


# ---------------------------------------------------------------------------------------
# The Grafana dashboard and its provisioning.

def _datasource_uid() -> str:
    sources = _yaml(DATASOURCES_YML)["datasources"]
    assert [s["type"] for s in sources] == ["prometheus"]
    return str(sources[0]["uid"])


def test_datasource_provisioning() -> None:
    doc = _yaml(DATASOURCES_YML)
    assert doc["apiVersion"] == 1
    (source,) = doc["datasources"]
    assert source["uid"] == "prometheus"
    assert source["url"] == "http://127.0.0.1:9090"  # one network namespace in compose
    assert source["access"] == "proxy"


def test_dashboard_provisioning() -> None:
    doc = _yaml(PROVIDERS_YML)
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


def test_dashboard_structure() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert 39 <= dashboard["schemaVersion"] < 42
    panels = list(_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    for p in panels:
        where = f"panel {p['id']} ({p.get('title')})"
        assert p.get("title"), where
        if p["type"] == "row":  # a heading: holds no query of its own
            assert not p.get("targets"), where
            continue
        exprs = [t.get("expr", "").strip() for t in p.get("targets", [])]
        assert exprs and all(exprs), f"{where}: every target needs an expr"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), where


def test_dashboard_layout_fits_and_does_not_overlap() -> None:
    cells: dict[tuple[int, int], int] = {}
    for p in _dashboard()["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, p["id"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {p['id']} overlap"
                cells[(x, y)] = p["id"]


def test_dashboard_uses_the_provisioned_datasource() -> None:
    uid = _datasource_uid()
    dashboard = _dashboard()
    expected = {"type": "prometheus", "uid": uid}
    seen = 0
    for p in _panels(dashboard):
        if p["type"] != "row" or "datasource" in p:
            assert p.get("datasource") == expected, f"panel {p['id']}"
        for t in p.get("targets", []):
            assert t.get("datasource") == expected, f"panel {p['id']} target {t['refId']}"
            seen += 1
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"] == {"type": "prometheus", "uid": uid}, var["name"]
    assert seen > 20


def test_dashboard_variables() -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    gateway = variables["gateway"]
    query = gateway["query"]["query"] if isinstance(gateway["query"], dict) else gateway["query"]
    assert query == "label_values(fpg_gateway_info, gateway)"
    # Every variable a query uses is defined (or one of Grafana's own).
    used = {m.group(1) or m.group(2)
            for _, expr in _dashboard_queries(dashboard)
            for m in re.finditer(r"\$\{(\w+)[^}]*\}|\$(\w+)", expr)}
    assert used - set(variables) <= {"__rate_interval", "__interval", "__range"}
    assert "gateway" in used


def test_dashboard_has_a_panel_per_stage() -> None:
    queries = _dashboard_queries(_dashboard())
    for stage in STAGES:
        exprs = [e for _, e in queries
                 if "fpg_response_seconds_bucket" in e and f'stage="{stage}"' in e]
        assert any(e.startswith("histogram_quantile(0.5,") for e in exprs), stage
        assert any(e.startswith("histogram_quantile(0.95,") for e in exprs), stage
        assert all("sum by (le, priority)" in e for e in exprs), stage


def test_dashboard_covers_the_operator_metrics() -> None:
    used = set().union(*(metric_names(e) for _, e in _dashboard_queries(_dashboard())))
    wanted = {
        "fpg_gateway_info", "fpg_response_seconds_bucket", "fpg_service_level_breaches_total",
        "fpg_outbox_depth", "fpg_outbox_oldest_age_seconds", "fpg_partner_up",
        "fpg_ledger_size", "fpg_ledger_checkpoint_age_seconds", "fpg_witness_alarms_total",
        "fpg_rejected_requests_total", "fpg_relay_retries_total", "fpg_messages_total", "up",
    }
    assert wanted - used == set()


# ---------------------------------------------------------------------------------------
# Prometheus: scrape configuration and alert rules.

def test_prometheus_finds_its_targets_in_files_beside_it() -> None:
    doc = _yaml(PROMETHEUS_YML)
    assert [CONFIG / f for f in doc["rule_files"]] == [ALERTS_YML]
    for job in doc["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        assert job.get("scheme", "http") == "http", job["job_name"]
        assert "static_configs" not in job, "targets belong in config/targets/*.json"
        files = [f for sd in job["file_sd_configs"] for f in sd["files"]]
        assert files == ["targets/*.json"], job["job_name"]
    assert (CONFIG / "targets").is_dir()


def test_the_demo_writes_the_targets_prometheus_discovers(tmp_path: Path) -> None:
    """What `gateway demo` writes (on free ports here) is what Prometheus itself
    discovers with config/prometheus.yml: promtool runs the real file discovery."""
    promtool = find_promtool()
    shutil.copy(PROMETHEUS_YML, tmp_path / "prometheus.yml")
    shutil.copy(ALERTS_YML, tmp_path / "alerts.yml")
    targets = tmp_path / "targets" / "demo.json"
    assert setup_only(tmp_path / "fed", True, targets) == 0
    assert stat.S_IMODE(targets.stat().st_mode) == 0o644  # Prometheus runs as another user
    expected = {}
    for country in COUNTRIES:
        config = load_config(tmp_path / "fed" / country.id / "gateway.toml")
        expected[f"{config.metrics.host}:{config.metrics.port}"] = country.id
    for job in _yaml(PROMETHEUS_YML)["scrape_configs"]:
        done = subprocess.run([promtool, "check", "service-discovery", "--timeout=2s",
                               str(tmp_path / "prometheus.yml"), job["job_name"]],
                              cwd="/", capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0, done.stderr
        found = {t["labels"]["instance"]: t["labels"]["gateway"]
                 for t in json.loads(done.stdout)}
        assert found == expected


def test_queries_name_the_scrape_job() -> None:
    jobs = {job["job_name"] for job in _yaml(PROMETHEUS_YML)["scrape_configs"]}
    queries = _alert_queries() + _dashboard_queries(_dashboard())
    named = {m.group(1) for _, e in queries for m in re.finditer(r'\bjob="([^"]*)"', e)}
    assert named and named <= jobs


#: Each promised alert and the metric it must watch.
ALERTS = {
    "GatewayDown": "up",
    "PartnerDown": "fpg_partner_up",
    "PartnerRefusesMessages": "fpg_partner_refused_messages_total",
    "OutboxBacklogGrowing": "fpg_outbox_depth",
    "OutboxStalled": "fpg_outbox_oldest_age_seconds",
    "FlashServiceLevelBreached": "fpg_service_level_breaches_total",
    "LedgerCheckpointStale": "fpg_ledger_checkpoint_age_seconds",
    "WitnessAlarm": "fpg_witness_alarms_total",
}


def test_alert_rules() -> None:
    rules = {r["alert"]: r for r in _alert_rules()}
    assert set(rules) == set(ALERTS)
    for name, rule in rules.items():
        assert ALERTS[name] in metric_names(rule["expr"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert 'priority="flash"' in rules["FlashServiceLevelBreached"]["expr"]
    assert "fpg_ledger_unchecked_entries" in rules["LedgerCheckpointStale"]["expr"]


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    doc = _yaml(ALERTS_TEST_YML)
    assert [CONFIG / f for f in doc["rule_files"]] == [ALERTS_YML]
    fires: set[str] = set()
    stays_quiet: set[str] = set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else stays_quiet).add(case["alertname"])
    assert fires == set(ALERTS)
    assert stays_quiet == set(ALERTS)


# ---------------------------------------------------------------------------------------
# promtool

def find_promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if "FPG_REQUIRE_PROMTOOL" in os.environ:
        pytest.fail("promtool is not on PATH and FPG_REQUIRE_PROMTOOL is set "
                    "(Debian: apt-get install --no-install-recommends prometheus)")
    pytest.skip("promtool is not on PATH; set FPG_REQUIRE_PROMTOOL=1 to fail instead")


def test_missing_promtool_skips_only_when_not_required(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FPG_REQUIRE_PROMTOOL", raising=False)
    with pytest.raises(pytest.skip.Exception):
        find_promtool()
    monkeypatch.setenv("FPG_REQUIRE_PROMTOOL", "1")
    with pytest.raises(pytest.fail.Exception):
        find_promtool()


def _promtool(*args: str) -> str:
    done = subprocess.run([find_promtool(), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{output}"
    return output


def test_promtool_check_config() -> None:
    _promtool("check", "config", str(PROMETHEUS_YML.relative_to(ROOT)))


def test_promtool_check_rules() -> None:
    _promtool("check", "rules", str(ALERTS_YML.relative_to(ROOT)))


def test_promtool_test_rules() -> None:
    assert "SUCCESS" in _promtool("test", "rules", str(ALERTS_TEST_YML.relative_to(ROOT)))


def _substitute(dashboard: dict[str, Any], expr: str) -> str:
    """The query as Grafana sends it with "All" selected and the default window."""
    values = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
    for var in dashboard["templating"]["list"]:
        values[var["name"]] = var["current"]["value"] if var["type"] == "interval" else ".*"
    return re.sub(r"\$\{(\w+)[^}]*\}|\$(\w+)",
                  lambda m: values[m.group(1) or m.group(2)], expr)


def test_promtool_parses_the_dashboard_queries(tmp_path: Path) -> None:
    """Grafana's variables replaced by values, each panel query becomes a recording rule
    that promtool must parse."""
    dashboard = _dashboard()
    rules = [{"record": f"dashboard:panel_{p['id']}:{t['refId']}",
              "expr": _substitute(dashboard, t["expr"])}
             for p in _panels(dashboard) for t in p.get("targets", [])]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}),
                    encoding="utf-8")
    assert f"{len(rules)} rules found" in _promtool("check", "rules", str(path))


def test_dashboard_counts_the_first_events_of_new_series(tmp_path: Path) -> None:
    """A labelled counter or histogram is born at its first event, so increase() and
    rate() alone cannot see that event (they need two samples): with the demo's handful
    of messages, every panel would stay empty. Run the dashboard's own queries, through
    ``promtool test rules``, over series that appear 10 minutes in and one that is older."""
    dashboard = _dashboard()
    by_title = {p["title"]: p for p in _panels(dashboard)}
    read_p50 = _substitute(dashboard, by_title["Accept → first read"]["targets"][0]["expr"])
    outcomes = _substitute(dashboard, by_title["Messages by outcome"]["targets"][0]["expr"])
    assert read_p50.startswith("histogram_quantile(0.5,")

    def series(name: str, values: str, **labels: str) -> dict[str, str]:
        labels = {"gateway": "vn-mps", "direction": "outbound", "partner": "kh-cnp",
                  **labels}
        text = ", ".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{name}{{{text}}}", "values": values}

    bucket = "fpg_response_seconds_bucket"
    inputs = [
        # one flash message, read after 3 s: in the (2.5, 5] bucket
        *(series(bucket, f"_x10 {n}x30", priority="flash", stage="read", le=le)
          for le, n in (("2.5", 0), ("5", 1), ("+Inf", 1))),
        # routine messages read within 2.5 s, one a minute from the start
        *(series(bucket, "0+1x40", priority="routine", stage="read", le=le)
          for le in ("2.5", "5", "+Inf")),
        series("fpg_messages_total", "_x10 1x30", outcome="accepted"),
        series("fpg_messages_total", "_x10 1 1 2x28", outcome="read"),
    ]
    doc = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": inputs,
        "promql_expr_test": [
            {"expr": read_p50, "eval_time": "20m", "exp_samples": [
                {"labels": '{priority="flash"}', "value": 3.75},   # 2.5 + (5 - 2.5) / 2
                {"labels": '{priority="routine"}', "value": 1.25},
            ]},
            {"expr": outcomes, "eval_time": "20m", "exp_samples": [
                {"labels": '{outcome="accepted"}', "value": 1},
                {"labels": '{outcome="read"}', "value": 2},
            ]},
        ]}]}
    path = tmp_path / "dashboard_test.yml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert "SUCCESS" in _promtool("test", "rules", str(path))
