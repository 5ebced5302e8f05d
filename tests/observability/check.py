#!/usr/bin/env python3
"""The checks of tests/observability.sh against a live Prometheus (standard library only).

Subcommands (each prints what it did and exits non-zero with a message on failure):

  config       test copy of deploy/prometheus/prometheus.yml and alerts.yml: the
               static targets and the file_sd files point at the test's processes,
               scrape and evaluation intervals are 1s, alert `for:` durations are
               shortened; everything else is the shipped text
  k8s-config   test copy of prometheus-k8s.yml whose pod discovery is replaced by a
               file of simulated pods (Kubernetes' own __meta_kubernetes_* labels),
               so the relabeling rules run as shipped
  targets      waits until Prometheus scrapes the expected targets of each job
  exprs        must return at least one series each, retried until --timeout:
               - every `expr` of every dashboard panel target, with Grafana's
                 variables replaced ($__rate_interval 30s, $__range 10m, dashboard
                 variables by ".*", their "All");
               - every dashboard variable query label_values(SELECTOR, LABEL):
                 SELECTOR, with series that carry LABEL;
               - every alert rule as Prometheus loaded it, split at its top-level
                 comparison and set operators (== != > < >= <= and or unless, their
                 bool / on / ignoring / group_left / group_right modifiers dropped):
                 every operand that is not a number literal, i.e. the series the rule
                 compares. The rules must then all evaluate with health "ok".
  alert        waits until an alert reaches state firing for one instance (and for no
               other), or checks that it is not active at all (--expect-none)
"""

import argparse
import glob
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# Grafana's built-in variables, as the dashboards would use them at 1s scrapes.
GRAFANA_VARS = {
    "__rate_interval": "30s",
    "__interval": "10s",
    "__range": "10m",
}


def fail(msg):
    print(f"observability: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def say(msg):
    print(f"observability: {msg}", flush=True)


def api(prom, path, params=None):
    data = urllib.parse.urlencode(params).encode() if params is not None else None
    req = urllib.request.Request(prom + path, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        try:
            body = json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}
    except (urllib.error.URLError, OSError, ValueError) as e:
        return {"status": "error", "error": str(e)}
    return body


def query(prom, expr):
    """Returns (result list or None, error string)."""
    body = api(prom, "/api/v1/query", {"query": expr})
    if body.get("status") != "success":
        return None, body.get("error", "unknown error")
    data = body["data"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}], ""
    return data["result"], ""


# ----------------------------------------------------------------------------- config


def sub_once(pattern, repl, text, what, flags=re.M):
    new, n = re.subn(pattern, repl, text, flags=flags)
    if n != 1:
        fail(f"{what}: expected exactly one match of /{pattern}/ in the shipped file, found {n}; "
             "update tests/observability/check.py to the new layout")
    return new


def cmd_config(a):
    src = open(os.path.join(a.shipped, "prometheus.yml")).read()
    text = src
    for key in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
        text = sub_once(rf"^(\s*{key}:)\s*\S+\s*$", rf"\g<1> {a.interval}", text, f"prometheus.yml {key}")
    learner_static = a.learner_static.split(",")
    actor_static = a.actor_static.split(",")
    text = sub_once(r'\["127\.0\.0\.1:9100"\]', json.dumps(learner_static), text, "prometheus.yml learner static target")
    text = sub_once(r'\["127\.0\.0\.1:9101", "127\.0\.0\.1:9102"\]', json.dumps(actor_static), text,
                    "prometheus.yml actor static targets")
    os.makedirs(os.path.join(a.out, "targets"), exist_ok=True)
    with open(os.path.join(a.out, "prometheus.yml"), "w") as f:
        f.write(text)
    # What deploy/hosts.sh writes: standard file_sd JSON, one group per host.
    for name, targets, job in (("learner.json", a.learner_sd, "volley-learner"),
                               ("actors.json", a.actor_sd, "volley-actor")):
        groups = [{"targets": [t], "labels": {"job": job, "run": "observability-test", "host": f"host-{i}"}}
                  for i, t in enumerate(targets.split(","))]
        with open(os.path.join(a.out, "targets", name), "w") as f:
            json.dump(groups, f, indent=2)

    rules = open(os.path.join(a.shipped, "alerts.yml")).read()
    fors = re.findall(r"^\s*for:\s*\S+\s*$", rules, flags=re.M)
    test_rules = re.sub(r"^(\s*for:)\s*\S+\s*$", rf"\g<1> {a.rule_for}", rules, flags=re.M)
    # Only the for: lines may differ from the shipped rules.
    diff = [(x, y) for x, y in zip(rules.splitlines(), test_rules.splitlines()) if x != y]
    if len(diff) != len(fors) or any(not x.strip().startswith("for:") for x, _ in diff):
        fail("the test copy of alerts.yml differs from the shipped one beyond its for: lines")
    with open(os.path.join(a.out, "alerts.yml"), "w") as f:
        f.write(test_rules)
    say(f"test config: {a.out}/prometheus.yml (static and file_sd targets replaced, "
        f"interval {a.interval}), alerts.yml ({len(fors)} for: durations set to {a.rule_for})")


def cmd_k8s_config(a):
    src = open(os.path.join(a.shipped, "prometheus-k8s.yml")).read()
    sd = "    kubernetes_sd_configs:\n      - role: pod\n"
    n = src.count(sd)
    if n != 2:
        fail(f"prometheus-k8s.yml: expected 2 pod discovery blocks (role: pod), found {n}")
    text = src.replace(sd, "    file_sd_configs:\n      - files: [pods.json]\n")
    for key in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
        text = sub_once(rf"^(\s*{key}:)\s*\S+\s*$", rf"\g<1> {a.interval}", text, f"prometheus-k8s.yml {key}")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "prometheus.yml"), "w") as f:
        f.write(text)
    with open(os.path.join(a.shipped, "alerts.yml")) as f, open(os.path.join(a.out, "alerts.yml"), "w") as g:
        g.write(f.read())

    def pod(name, address, component, port, scrape="true", phase="Running"):
        labels = {
            "__meta_kubernetes_namespace": "volley",
            "__meta_kubernetes_pod_name": name,
            "__meta_kubernetes_pod_node_name": "node-a",
            "__meta_kubernetes_pod_phase": phase,
            "__meta_kubernetes_pod_annotation_prometheus_io_port": str(port),
        }
        if scrape is not None:
            labels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] = scrape
        if component is not None:
            labels["__meta_kubernetes_pod_label_app_kubernetes_io_component"] = component
        return {"targets": [address], "labels": labels}

    lm = int(a.learner_metrics)
    am = [int(p) for p in a.actor_metrics.split(",")]
    pods = [
        # What Kubernetes gives for a pod with a declared container port (gRPC) ...
        pod("volley-learner-0", f"127.0.0.1:{a.learner_grpc}", "learner", lm),
        # ... and for one without declared ports (pod IP only).
        pod("volley-actor-a", "127.0.0.1", "actor", am[0]),
        pod("volley-actor-b", "127.0.0.1:8080", "actor", am[1]),
        # Not to be scraped: no annotation, annotation "false", pending, no component.
        pod("other-0", "127.0.0.1", "actor", am[0], scrape=None),
        pod("other-1", "127.0.0.1", "learner", lm, scrape="false"),
        pod("volley-actor-pending", "127.0.0.1", "actor", am[0], phase="Pending"),
        pod("sidecar-0", "127.0.0.1", None, am[0]),
    ]
    with open(os.path.join(a.out, "pods.json"), "w") as f:
        json.dump(pods, f, indent=1)
    expect = {
        "volley-learner": {"volley-learner-0": f"http://127.0.0.1:{lm}/metrics"},
        "volley-actor": {
            "volley-actor-a": f"http://127.0.0.1:{am[0]}/metrics",
            "volley-actor-b": f"http://127.0.0.1:{am[1]}/metrics",
        },
    }
    with open(os.path.join(a.out, "expect.json"), "w") as f:
        json.dump(expect, f)
    say(f"k8s test config: {a.out}/prometheus.yml (pod discovery from {len(pods)} simulated pods)")


# ---------------------------------------------------------------------------- targets


def cmd_targets(a):
    """--expect job=N ... or --expect-file (k8s: job -> {instance: scrapeUrl})."""
    if a.expect_file:
        exact = json.load(open(a.expect_file))
        want = {job: len(v) for job, v in exact.items()}
    else:
        exact = None
        want = {}
        for e in a.expect:
            job, n = e.split("=")
            want[job] = int(n)
    deadline = time.time() + a.timeout
    last = ""
    while True:
        body = api(a.prom, "/api/v1/targets")
        problems = []
        if body.get("status") != "success":
            problems.append(f"targets API: {body.get('error')}")
        else:
            active = body["data"]["activeTargets"]
            for job, n in want.items():
                ts = [t for t in active if t["labels"].get("job") == job]
                up = [t for t in ts if t["health"] == "up"]
                if len(ts) != n:
                    problems.append(f"job {job}: {len(ts)} targets, expected {n}: "
                                    + ", ".join(t["scrapeUrl"] for t in ts))
                elif len(up) != n:
                    problems.append(f"job {job}: {len(up)} of {n} targets up: "
                                    + "; ".join(f"{t['scrapeUrl']} {t['health']} {t['lastError']}" for t in ts))
                if exact is not None:
                    got = {t["labels"].get("instance"): t["scrapeUrl"] for t in ts}
                    if got != exact[job]:
                        problems.append(f"job {job}: targets {got}, expected {exact[job]}")
                    for t in ts:
                        for label in ("namespace", "pod", "node"):
                            if label not in t["labels"]:
                                problems.append(f"job {job}: target {t['scrapeUrl']} lacks label {label}")
        if not problems:
            break
        last = "; ".join(problems)
        if time.time() > deadline:
            fail(f"{a.what}: targets not as expected after {a.timeout}s: {last}")
        time.sleep(0.5)
    dropped = ""
    if exact is not None:
        dropped = f", {len(body['data'].get('droppedTargets', []))} discovered targets dropped by relabeling"
    say(f"{a.what}: " + ", ".join(f"{job} {n} up" for job, n in want.items()) + dropped)


# ------------------------------------------------------------------------------ exprs

COMPARISON = ("==", "!=", ">=", "<=", ">", "<")
SET_OPS = ("and", "or", "unless")
NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$|^[+-]?(Inf|NaN)$", re.I)


def skip_group(s, i):
    """s[i] == '(' : index after the matching ')'."""
    depth = 0
    while i < len(s):
        if s[i] == "(":
            depth += 1
        elif s[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def operands(expr):
    """Splits a PromQL expression at its top-level comparison and set operators
    (==, !=, >, <, >=, <=, and, or, unless; their `bool`, on(...), ignoring(...),
    group_left(...), group_right(...) modifiers dropped) and returns the operands.
    Arithmetic binds tighter than these, so each operand is a whole expression."""
    parts, depth, quote, start, i = [], 0, None, 0, 0
    ident = re.compile(r"[A-Za-z0-9_:]")
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
            i += 1
            continue
        if c in "\"'`":
            quote = c
            i += 1
            continue
        if c in "([{":
            depth += 1
            i += 1
            continue
        if c in ")]}":
            depth -= 1
            i += 1
            continue
        op_len = 0
        if depth == 0:
            for op in COMPARISON:
                if expr.startswith(op, i):
                    op_len = len(op)
                    break
            if not op_len:
                for op in SET_OPS:
                    if (expr.startswith(op, i) and (i == 0 or not ident.match(expr[i - 1]))
                            and (i + len(op) >= len(expr) or not ident.match(expr[i + len(op)]))):
                        op_len = len(op)
                        break
        if not op_len:
            i += 1
            continue
        parts.append(expr[start:i])
        j = i + op_len
        # Modifiers after the operator.
        while True:
            m = re.match(r"\s*(bool|on|ignoring|group_left|group_right)\b\s*", expr[j:])
            if not m:
                break
            j += m.end()
            if m.group(1) != "bool" and j < len(expr) and expr[j] == "(":
                j = skip_group(expr, j)
        start = i = j
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def substitute(expr, where):
    out = expr
    for name, value in GRAFANA_VARS.items():
        out = out.replace("${" + name + "}", value).replace("$" + name, value)
    # Dashboard variables ($learner, ${actor}, ...): "All" is the regex .*
    out = re.sub(r"\$\{(\w+)(:\w+)?\}|\$(\w+)", ".*", out)
    if "$" in out:
        fail(f"{where}: unresolved variable in {expr!r}")
    return out


def dashboard_checks(dirname):
    checks = []
    files = sorted(glob.glob(os.path.join(dirname, "*.json")))
    if not files:
        fail(f"no dashboards in {dirname}")
    panels_seen = 0
    for path in files:
        d = json.load(open(path))
        title = d.get("title") or os.path.basename(path)
        for key in ("uid", "title", "panels", "templating", "schemaVersion"):
            if key not in d:
                fail(f"dashboard {path}: no {key}")
        for v in d["templating"]["list"]:
            if v.get("type") != "query":
                continue
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\s*\)\s*", q)
            if not m:
                fail(f"dashboard '{title}' variable {v['name']}: cannot check query {q!r}")
            checks.append((f"dashboard '{title}' variable ${v['name']}", substitute(m.group(1), title), m.group(2)))

        def walk(panels):
            nonlocal panels_seen
            for p in panels:
                if p.get("type") == "row":
                    walk(p.get("panels", []))
                    continue
                panels_seen += 1
                ptitle = p.get("title", f"id {p.get('id')}")
                where = f"dashboard '{title}' panel '{ptitle}'"
                ds = p.get("datasource", {})
                if not isinstance(ds, dict) or ds.get("uid") != "${datasource}":
                    fail(f"{where}: datasource is {ds!r}, not the ${{datasource}} variable")
                targets = p.get("targets", [])
                if not targets:
                    fail(f"{where}: no queries")
                for t in targets:
                    if not t.get("expr"):
                        fail(f"{where} query {t.get('refId')}: no expr")
                    checks.append((f"{where} query {t.get('refId')}", substitute(t["expr"], where), None))

        walk(d["panels"])
    return files, panels_seen, checks


def rule_checks(prom):
    body = api(prom, "/api/v1/rules")
    if body.get("status") != "success":
        fail(f"rules API: {body.get('error')}")
    rules = [r for g in body["data"]["groups"] for r in g["rules"]]
    if not rules:
        fail("Prometheus loaded no alert rules")
    checks = []
    for r in rules:
        where = f"alert rule {r['name']}"
        ops = [o for o in operands(r["query"]) if not NUMBER.match(o)]
        if not ops:
            fail(f"{where}: no series in {r['query']!r}")
        for k, o in enumerate(ops):
            checks.append((f"{where} operand {k + 1} of {len(ops)}", o, None))
    return rules, checks


def cmd_exprs(a):
    files, panels, dash = dashboard_checks(a.dashboards)
    rules, rule_ops = rule_checks(a.prom)
    checks = dash + rule_ops
    say(f"checking {len(dash)} dashboard expressions ({len(files)} dashboards, {panels} panels, variables included) "
        f"and {len(rule_ops)} series of {len(rules)} alert rules")
    for where, expr, _ in rule_ops:
        print(f"  {where}: {expr}")
    pending = list(checks)
    nan_only = {}
    deadline = time.time() + a.timeout
    next_report = time.time() + 10
    errors = {}
    while pending:
        still = []
        for where, expr, label in pending:
            result, err = query(a.prom, expr)
            if result is None:
                errors[where] = f"{expr}: {err}"
                still.append((where, expr, label))
                continue
            errors.pop(where, None)
            if label is not None:
                result = [r for r in result if label in r["metric"]]
            if not result:
                still.append((where, expr, label))
                continue
            if all(math.isnan(float(r["value"][1])) for r in result):
                nan_only[where] = expr
        pending = still
        if not pending:
            break
        if time.time() > deadline:
            for where, expr, _ in pending:
                msg = errors.get(where, f"{expr}: no series")
                print(f"observability: FAIL: {where}: {msg}", file=sys.stderr)
            fail(f"{len(pending)} of {len(checks)} expressions returned no series after {a.timeout}s")
        if time.time() > next_report:
            say(f"waiting for data: {len(pending)} of {len(checks)} expressions still empty, e.g. {pending[0][0]}")
            next_report = time.time() + 10
        time.sleep(1)
    # Rule evaluation health, now that every rule has been evaluated with data.
    body = api(a.prom, "/api/v1/rules")
    bad = [f"{r['name']}: {r.get('lastError')}" for g in body["data"]["groups"] for r in g["rules"]
           if r.get("health") != "ok"]
    if bad:
        fail("alert rules evaluate with errors: " + "; ".join(bad))
    for where, expr in nan_only.items():
        say(f"note: {where} has series, all NaN for now (no events in the window): {expr}")
    say(f"all {len(checks)} expressions returned series ({len(dash)} dashboard, {len(rule_ops)} alert-rule); "
        f"{len(rules)} alert rules evaluate without errors")
    with open(a.count_file, "w") as f:
        f.write(str(len(checks)))


# ------------------------------------------------------------------------------ alert


def alerts(prom, name):
    body = api(prom, "/api/v1/alerts")
    if body.get("status") != "success":
        return None
    return [x for x in body["data"]["alerts"] if x["labels"].get("alertname") == name]


def cmd_alert(a):
    if a.expect_none:
        got = alerts(a.prom, a.name)
        if got is None:
            fail("alerts API failed")
        if got:
            fail(f"{a.name} is active before any actor stopped: "
                 + ", ".join(f"{x['labels'].get('instance')} {x['state']}" for x in got))
        say(f"{a.name}: not active while every actor runs")
        return
    t0 = a.since or time.time()
    pending_at = None
    while True:
        got = alerts(a.prom, a.name) or []
        mine = [x for x in got if x["labels"].get("instance") == a.instance]
        others = [x for x in got if x["labels"].get("instance") != a.instance]
        if others:
            fail(f"{a.name} fired for instances that run: " + ", ".join(x["labels"].get("instance", "?") for x in others))
        states = {x["state"] for x in mine}
        if "pending" in states and pending_at is None:
            pending_at = time.time() - t0
        if "firing" in states:
            x = next(x for x in mine if x["state"] == "firing")
            seen = f"pending after {pending_at:.1f}s, " if pending_at is not None else ""
            say(f"{a.name} for {a.instance}: {seen}firing after {time.time() - t0:.1f}s "
                f"(for: shortened; 1s scrapes and evaluations); summary: {x['annotations'].get('summary')}")
            return
        if time.time() - t0 > a.timeout:
            fail(f"{a.name} did not fire for {a.instance} within {a.timeout}s (states seen: {states or 'none'})")
        time.sleep(0.5)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config")
    c.add_argument("--shipped", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--learner-static", required=True)
    c.add_argument("--actor-static", required=True)
    c.add_argument("--learner-sd", required=True)
    c.add_argument("--actor-sd", required=True)
    c.add_argument("--interval", default="1s")
    c.add_argument("--rule-for", default="3s")
    c.set_defaults(fn=cmd_config)
    k = sub.add_parser("k8s-config")
    k.add_argument("--shipped", required=True)
    k.add_argument("--out", required=True)
    k.add_argument("--learner-grpc", required=True)
    k.add_argument("--learner-metrics", required=True)
    k.add_argument("--actor-metrics", required=True)
    k.add_argument("--interval", default="1s")
    k.set_defaults(fn=cmd_k8s_config)
    t = sub.add_parser("targets")
    t.add_argument("--prom", required=True)
    t.add_argument("--expect", nargs="*", default=[])
    t.add_argument("--expect-file")
    t.add_argument("--what", default="targets")
    t.add_argument("--timeout", type=float, default=30)
    t.set_defaults(fn=cmd_targets)
    e = sub.add_parser("exprs")
    e.add_argument("--prom", required=True)
    e.add_argument("--dashboards", required=True)
    e.add_argument("--timeout", type=float, default=120)
    e.add_argument("--count-file", required=True)
    e.set_defaults(fn=cmd_exprs)
    al = sub.add_parser("alert")
    al.add_argument("--prom", required=True)
    al.add_argument("--name", required=True)
    al.add_argument("--instance")
    al.add_argument("--expect-none", action="store_true")
    al.add_argument("--since", type=float, help="unix time the instance stopped (default: now)")
    al.add_argument("--timeout", type=float, default=60)
    al.set_defaults(fn=cmd_alert)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
