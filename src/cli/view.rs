//! What the commands print: the API's JSON rendered as tables and text for people.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::table::Table;

/// `up`, `down`, `unknown` or `drained`.
pub(super) fn state_of(row: &Value) -> String {
    if row["admin"] == json!("drained") {
        "drained".to_owned()
    } else {
        text(&row["health"])
    }
}

/// The targets as a table; `now` for the "since" column.
pub fn targets_table(v: &Value, now: SystemTime) -> Table {
    let mut t = Table::new(&["TARGET", "HOST", "STATE", "SINCE", "CODE", "RTT", "REASON"]);
    for row in v.as_array().into_iter().flatten() {
        let since = row["since"]
            .as_u64()
            .map(|s| {
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs(s);
                let ago = now.duration_since(at).unwrap_or_default();
                humantime::format_duration(Duration::from_secs(ago.as_secs())).to_string()
            })
            .unwrap_or_default();
        let rtt = row["rtt_ms"]
            .as_f64()
            .map(|ms| format!("{ms:.1}ms"))
            .unwrap_or_else(|| "-".to_owned());
        let code = row["last_code"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), |c| c.to_string());
        let mut reason = text(&row["last_reason"]);
        if row["admin"] == json!("drained") {
            let d = &row["drain"];
            let mut r = "drained".to_owned();
            if let Some(u) = d["until"].as_str() {
                r.push_str(&format!(" until {u}"));
            }
            if let Some(b) = d["by"].as_str() {
                r.push_str(&format!(" by {b}"));
            }
            if let Some(n) = d["note"].as_str() {
                r.push_str(&format!(": {n}"));
            }
            reason = format!("{r}; {reason}");
        }
        t.row(vec![
            text(&row["key"]),
            text(&row["host"]),
            state_of(row),
            since,
            code,
            rtt,
            reason,
        ]);
    }
    t
}

pub(super) fn records_table(v: &Value) -> Table {
    let mut t = Table::new(&["#", "NAME", "TYPE", "TTL", "DATA"]);
    for (i, r) in v["records"].as_array().into_iter().flatten().enumerate() {
        let data: Vec<String> = r
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !matches!(k.as_str(), "name" | "type" | "ttl"))
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect();
        t.row(vec![
            i.to_string(),
            text(&r["name"]),
            text(&r["type"]),
            r["ttl"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            data.join(" "),
        ]);
    }
    t
}

pub(super) fn explain_text(v: &Value) -> String {
    let mut out = format!(
        "{} {}: {} ({})\n",
        text(&v["name"]),
        text(&v["type"]),
        text(&v["after"]["rcode"]),
        text(&v["after"]["source"])
    );
    if let Some(d) = v["domain"].as_str() {
        out.push_str(&format!(
            "SIP domain {}; policy applied\n",
            d.trim_end_matches('.')
        ));
    }
    let mut t = Table::new(&["SECTION", "ACTION", "RECORD", "WHY"]);
    for d in v["decisions"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&d["section"]),
            text(&d["action"]),
            record_text(&d["record"]),
            text(&d["reason"]),
        ]);
    }
    if v["decisions"].as_array().is_some_and(|a| !a.is_empty()) {
        out.push_str(&t.render());
    } else {
        for r in v["after"]["answer"].as_array().into_iter().flatten() {
            out.push_str(&format!("{}\n", text(r)));
        }
    }
    out
}

/// A record of the explain view (`{name, ttl, type, data}`) in presentation form.
pub(super) fn record_text(r: &Value) -> String {
    match r {
        Value::Object(_) => format!(
            "{} {} {} {}",
            text(&r["name"]),
            text(&r["ttl"]),
            text(&r["type"]),
            text(&r["data"])
        ),
        other => text(other),
    }
}

/// A JSON value as plain text (strings without quotes, null as `-`).
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}
