//! The files in `deploy/` that operators install: the systemd unit passes
//! `systemd-analyze verify` (Debian's `systemd` package), with its `ExecStart=` pointed at the
//! binary under test; the Prometheus alert rules pass `promtool check rules` and their unit tests
//! `promtool test rules` (Debian's `prometheus` package); the Grafana dashboard is JSON whose
//! expressions promtool parses; and every metric name the rules, their tests and the dashboard
//! use is one a running registrar exposes, and `docs/metrics.md` describes. `.ci/run` installs
//! both packages.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Daemon;

#[test]
fn the_systemd_unit_verifies() {
    let unit = include_str!("../../deploy/systemd/rserpool-registrar.service");
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    let bin = env!("CARGO_BIN_EXE_rserpool-registrar");
    let dir = std::env::temp_dir().join(format!("rserpool-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rserpool-registrar.service");
    std::fs::write(&path, unit.replace("/usr/bin/rserpool-registrar", bin)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("rserpool-registrar.service:"),
        "warnings about the unit: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const RULES: &str = include_str!("../../deploy/prometheus/rserpool-registrar-alerts.yml");
const RULE_TESTS: &str = include_str!("../../deploy/prometheus/rserpool-registrar-alerts.test.yml");
const DASHBOARD: &str = include_str!("../../deploy/grafana/rserpool-registrar.json");
const METRICS_DOC: &str = include_str!("../../docs/metrics.md");

/// A file of `deploy/prometheus/`.
fn prometheus_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/prometheus")
        .join(name)
}

/// Runs `promtool` with `args` and returns its output after checking that it succeeded.
fn promtool<S: AsRef<OsStr>>(args: &[S]) -> String {
    let out: Output = Command::new("promtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool does not run ({e}): install it with `apt-get install -y \
                 --no-install-recommends prometheus` (Debian's package; .ci/run does)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool failed:\n{text}");
    text
}

/// The names of the alerts the rules define, in order.
fn alert_names() -> Vec<&'static str> {
    RULES
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect()
}

/// The `expr` values of a YAML file written as the rules are: on the key's line, or as a folded
/// block (`>-`) on the more indented lines after it.
fn yaml_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if !value.starts_with('>') && !value.starts_with('|') {
            exprs.push(value.to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            .map(|l| l.trim())
            .collect();
        exprs.push(block.join(" "));
    }
    exprs
}

/// The metric names a PromQL expression selects: its identifiers, except functions (followed by
/// `(`), aggregations, keywords and operators, label names (in `{...}` and in the
/// lists after `by`, `without`, `on`, `ignoring`, `group_left` and `group_right`), strings,
/// numbers and durations (in `[...]`).
fn metric_names(expr: &str) -> Vec<String> {
    const LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Keywords and operators, and the aggregations, which may stand before `by (...)`.
    const WORDS: [&str; 19] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut label_list_next = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = past_string(&chars, i);
        } else if c == '{' {
            i = past_group(&chars, i, '}');
        } else if c == '[' {
            i = past_group(&chars, i, ']');
        } else if c == '(' && label_list_next {
            label_list_next = false;
            i = past_group(&chars, i, ')');
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            label_list_next = LISTS.contains(&word.as_str());
            if !label_list_next
                && next != Some(&'(')
                && !WORDS.contains(&word.to_ascii_lowercase().as_str())
            {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The index just past the string literal that starts at `i`.
fn past_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() {
        match chars[j] {
            '\\' if quote != '`' => j += 2,
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    j
}

/// The index just past the `close` that ends the group opening at `i`, strings skipped.
fn past_group(chars: &[char], i: usize, close: char) -> usize {
    let mut j = i + 1;
    while j < chars.len() {
        match chars[j] {
            '"' | '\'' | '`' => j = past_string(chars, j),
            c if c == close => return j + 1,
            _ => j += 1,
        }
    }
    j
}

/// The dashboard, parsed.
fn dashboard() -> serde_json::Value {
    serde_json::from_str(DASHBOARD).expect("the dashboard is JSON")
}

/// Every panel's queries, with the title of their panel.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap_or_default().into()))
        })
        .collect()
}

#[test]
fn the_alert_rules_check_and_their_unit_tests_pass() {
    let alerts = alert_names();
    assert!(alerts.len() >= 10, "{alerts:?}");
    let checked = promtool(&[
        OsStr::new("check"),
        OsStr::new("rules"),
        prometheus_file("rserpool-registrar-alerts.yml").as_os_str(),
    ]);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{checked}"
    );
    let tested = promtool(&[
        OsStr::new("test"),
        OsStr::new("rules"),
        prometheus_file("rserpool-registrar-alerts.test.yml").as_os_str(),
    ]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_is_tested_firing_and_quiet() {
    let lines: Vec<&str> = RULE_TESTS.lines().map(str::trim).collect();
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for pair in lines.windows(2) {
        let Some(alert) = pair[0].strip_prefix("alertname: ") else {
            continue;
        };
        match pair[1] {
            "exp_alerts: []" => quiet.insert(alert),
            "exp_alerts:" => fires.insert(alert),
            other => panic!("{alert}: `{other}` after the alert name"),
        };
    }
    for alert in alert_names() {
        assert!(fires.contains(alert), "no test where {alert} fires");
        assert!(quiet.contains(alert), "no test where {alert} stays quiet");
    }
}

#[test]
fn the_dashboard_uses_the_datasource_variable_and_its_queries_parse() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus datasource variable"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    let ids: BTreeSet<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids missing or repeated");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = &panel["title"];
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} queries nothing");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.iter().all(|(_, e)| !e.is_empty()), "{exprs:?}");
    // Each query as a recording rule, `$__rate_interval` as Grafana fills it in: promtool
    // parses them (the `$job` and `$instance` in the regular expressions are valid as they are).
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            serde_json::json!({
                "record": format!("dashboard_query_{i}"),
                "expr": expr.replace("$__rate_interval", "5m"),
            })
        })
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let path = std::env::temp_dir().join(format!("rserpool-dashboard-{}.yml", std::process::id()));
    std::fs::write(&path, file.to_string()).unwrap();
    let checked = promtool(&[OsStr::new("check"), OsStr::new("rules"), path.as_os_str()]);
    let _ = std::fs::remove_file(&path);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{checked}"
    );
}

#[test]
fn the_metric_names_expressions_select_are_the_lexer_s() {
    assert_eq!(
        metric_names(
            "sum by (job, le) (rate(a_total{job=~\"$job\", x=\"b{c}\"}[$__rate_interval])) \
             / on (job) group_left (k) b > bool 0.5e3 or c:d offset 5m"
        ),
        ["a_total", "b", "c:d"]
    );
    assert_eq!(metric_names("time() - max(x)"), ["x"]);
}

#[test]
fn every_metric_the_deploy_files_use_is_exposed_and_documented() {
    let d = Daemon::start(&[
        "--workers",
        "2",
        "--asap",
        "tcp://127.0.0.1:0",
        "--enrp",
        "tcp://127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let response = d.scrape();
    let (_, text) = response.split_once("\r\n\r\n").expect("an HTTP response");
    // Every family (from its TYPE line, so also those without samples now, like the peers'),
    // and every sample's name (a histogram's `_bucket`, `_sum` and `_count`).
    let mut exposed = BTreeSet::new();
    let mut families = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            families.push(name);
            exposed.insert(name);
        } else if !line.starts_with('#') {
            exposed.insert(line.split(['{', ' ']).next().unwrap());
        }
    }
    assert!(families.len() > 40, "{families:?}");

    let mut used: Vec<(String, String)> = Vec::new();
    for expr in yaml_exprs(RULES) {
        for name in metric_names(&expr) {
            used.push(("the alert rules".into(), name));
        }
    }
    assert_eq!(yaml_exprs(RULES).len(), alert_names().len());
    for series in RULE_TESTS
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- series: "))
    {
        let name = series.trim_matches('\'').split('{').next().unwrap();
        used.push(("the alert rules' tests".into(), name.to_owned()));
    }
    let dashboard = dashboard();
    for (title, expr) in dashboard_exprs(&dashboard) {
        for name in metric_names(&expr) {
            used.push((format!("dashboard panel {title}"), name));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|q| q.split(',').next())
                .unwrap_or_else(|| panic!("unexpected variable query {query}"));
            for name in metric_names(selector) {
                used.push((format!("dashboard variable {}", variable["name"]), name));
            }
        }
    }
    for needed in [
        "rserpool_request_duration_seconds_bucket",
        "process_open_fds",
        "up",
    ] {
        assert!(used.iter().any(|(_, n)| n == needed), "{needed}: {used:?}");
    }
    for (place, name) in &used {
        // `up` is Prometheus's own series of every target.
        assert!(
            name == "up" || exposed.contains(name.as_str()),
            "{place}: {name} is not a metric the registrar exposes"
        );
    }
    for family in families {
        assert!(
            METRICS_DOC.contains(&format!("`{family}`")),
            "docs/metrics.md does not describe {family}"
        );
    }
}
