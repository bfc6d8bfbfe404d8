//! What the status page shows, gathered from the API's state and rendered with maud
//! (which escapes every value it prints).

use std::time::{Duration, SystemTime};

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use super::super::ApiState;
use crate::{
    health::history::{Bucket, History},
    record::{DomainName, RType},
    reload::ReloadStatus,
    target::TargetKey,
    zones::edit,
};

/// The page without data: title, readiness, sign-in, the drain dialog.
pub(super) fn shell(ready: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { "sipdns status" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/ui/app.css";
                script src="/ui/app.js" defer {}
            }
            body {
                header.top {
                    h1 { "sipdns" }
                    span #ready .badge .(if ready { "up" } else { "down" }) {
                        (if ready { "ready" } else { "not ready" })
                    }
                    span #updated .muted {}
                    button #signout type="button" hidden { "Sign out" }
                }
                form #signin {
                    label for="token" { "API token" }
                    input #token type="password" autocomplete="off" required;
                    button type="submit" { "Sign in" }
                    p #signin-error .error role="alert" {}
                    p.muted { "The token stays in this tab (sessionStorage) and is sent only as an Authorization header." }
                }
                main #dash aria-live="polite" {}
                dialog #drain-dialog {
                    form #drain-form method="dialog" {
                        h2 { "Drain " span #drain-target {} }
                        p.muted { "Phones are no longer sent there; it is still probed." }
                        label for="drain-duration" { "For" }
                        select #drain-duration {
                            option value="1m" { "1 minute" }
                            option value="15m" { "15 minutes" }
                            option value="30m" selected { "30 minutes" }
                            option value="1h" { "1 hour" }
                            option value="2h" { "2 hours" }
                            option value="8h" { "8 hours" }
                            option value="" { "until enabled" }
                        }
                        label for="drain-note" { "Note" }
                        input #drain-note type="text" maxlength="500" placeholder="firmware upgrade";
                        div.buttons {
                            button #drain-cancel type="button" value="cancel" { "Cancel" }
                            button #drain-ok type="submit" value="ok" { "Drain" }
                        }
                    }
                }
            }
        }
    }
}

/// One target as the page shows it.
struct Row {
    key: String,
    host: String,
    domains: Vec<String>,
    state: &'static str,
    reason: String,
    last_code: Option<u64>,
    rtt_ms: Option<f64>,
    since: Option<u64>,
    strip: Vec<Option<Bucket>>,
}

/// One "what a phone is told" line: a question and its explanation.
struct Told {
    name: String,
    qtype: &'static str,
    rcode: &'static str,
    answer: Vec<String>,
    additional: Vec<String>,
    all_down: Option<String>,
    decisions: Vec<(String, String, String, String)>,
}

struct Domain {
    name: String,
    rows: Vec<Row>,
    told: Vec<Told>,
}

struct ZoneView {
    summary: edit::ZoneSummary,
    records: Vec<String>,
}

/// Everything the dashboard shows, gathered at one moment.
pub(super) struct Dashboard {
    now: SystemTime,
    ready: bool,
    reload: ReloadStatus,
    domains: Vec<Domain>,
    others: Vec<Row>,
    zones: Vec<ZoneView>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn bare(d: &str) -> String {
    d.trim_end_matches('.').to_owned()
}

fn row_of(v: &Value, history: Option<&History>, now: SystemTime) -> Row {
    let key = text(&v["key"]);
    let drained = v["admin"] == "drained";
    let state = if drained {
        "drained"
    } else {
        match v["health"].as_str() {
            Some("up") => "up",
            Some("down") => "down",
            _ => "unknown",
        }
    };
    let mut reason = text(&v["last_reason"]);
    if drained {
        let d = &v["drain"];
        let mut r = "drained".to_owned();
        if let Some(b) = d["by"].as_str() {
            r.push_str(&format!(" by {b}"));
        }
        if let Some(u) = d["until"].as_str() {
            r.push_str(&format!(" until {u}"));
        } else {
            r.push_str(" until enabled");
        }
        if let Some(n) = d["note"].as_str() {
            r.push_str(&format!(" — {n}"));
        }
        reason = r;
    }
    let strip = match (history, key.parse::<TargetKey>()) {
        (Some(h), Ok(k)) => h.strip(&k, now),
        _ => Vec::new(),
    };
    Row {
        key,
        host: text(&v["host"]),
        domains: v["domains"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| bare(&text(d)))
            .collect(),
        state,
        reason,
        last_code: v["last_code"].as_u64(),
        rtt_ms: v["rtt_ms"].as_f64(),
        since: v["since"].as_u64(),
        strip,
    }
}

/// The questions a phone asks for a SIP domain (RFC 3263): NAPTR, the SRV sets, the
/// domain's own addresses.
fn questions(domain: &DomainName) -> Vec<(String, RType, &'static str)> {
    let d = domain.as_str().trim_end_matches('.');
    vec![
        (d.to_owned(), RType::NAPTR, "NAPTR"),
        (format!("_sips._tcp.{d}"), RType::SRV, "SRV"),
        (format!("_sip._tcp.{d}"), RType::SRV, "SRV"),
        (format!("_sip._udp.{d}"), RType::SRV, "SRV"),
        (d.to_owned(), RType::A, "A"),
        (d.to_owned(), RType::AAAA, "AAAA"),
    ]
}

impl Dashboard {
    /// Reads the state of everything shown.
    pub(super) async fn gather(s: &ApiState) -> Self {
        let now = SystemTime::now();
        let data = s.resolver.data();
        let history = s.history.as_deref();
        let list = s
            .targets
            .as_ref()
            .map_or(Value::Array(Vec::new()), |t| t.list());
        let rows: Vec<Row> = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| row_of(v, history, now))
            .collect();
        let mut domains = Vec::new();
        let mut placed = vec![false; rows.len()];
        let mut all_rows: Vec<Option<Row>> = rows.into_iter().map(Some).collect();
        for dc in &data.config.sip.domains {
            let name = bare(dc.name.as_str());
            let mut mine = Vec::new();
            for (i, slot) in all_rows.iter_mut().enumerate() {
                if slot.as_ref().is_some_and(|r| r.domains.contains(&name)) {
                    placed[i] = true;
                    if let Some(r) = slot.take() {
                        mine.push(r);
                    }
                }
            }
            let mut told = Vec::new();
            for (qname, rtype, label) in questions(&dc.name) {
                let Ok(n) = DomainName::parse(&qname) else {
                    continue;
                };
                let e = s.resolver.explain(&n, rtype).await;
                // Only what exists: an SRV set or address the domain does not have is noise.
                if e.before.answers.is_empty() && rtype != RType::NAPTR {
                    continue;
                }
                told.push(Told {
                    name: qname,
                    qtype: label,
                    rcode: e.after.rcode.metric_label(),
                    answer: e.after.answers.iter().map(ToString::to_string).collect(),
                    additional: e.after.additional.iter().map(ToString::to_string).collect(),
                    all_down: e.all_down.map(|a| {
                        serde_json::to_value(a)
                            .map(|v| text(&v))
                            .unwrap_or_default()
                    }),
                    decisions: e
                        .decisions
                        .iter()
                        .map(|d| {
                            let label = |v: serde_json::Result<Value>| {
                                v.map(|v| text(&v)).unwrap_or_default()
                            };
                            (
                                label(serde_json::to_value(d.section)),
                                label(serde_json::to_value(d.action)),
                                d.record.to_string(),
                                d.reason.clone(),
                            )
                        })
                        .collect(),
                });
            }
            domains.push(Domain {
                name,
                rows: mine,
                told,
            });
        }
        let others = all_rows.into_iter().flatten().collect();
        let summaries = match &s.secondaries {
            Some(sec) => edit::list_with_secondaries(&data.zones, sec.status()),
            None => edit::list(&data.zones),
        };
        let zones = summaries
            .into_iter()
            .map(|summary| {
                let records = edit::get(&data.zones, &summary.zone)
                    .map(|(doc, _)| {
                        doc.records
                            .iter()
                            .map(|r| match serde_json::to_value(r) {
                                Ok(Value::Object(m)) => {
                                    let name = m.get("name").map(text).unwrap_or_default();
                                    let rtype = m.get("type").map(text).unwrap_or_default();
                                    let rest: Vec<String> = m
                                        .iter()
                                        .filter(|(k, _)| !matches!(k.as_str(), "name" | "type"))
                                        .map(|(k, v)| format!("{k}={}", text(v)))
                                        .collect();
                                    format!("{name} {rtype} {}", rest.join(" "))
                                }
                                _ => String::new(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                ZoneView { summary, records }
            })
            .collect();
        Self {
            now,
            ready: s.readiness().ready,
            reload: s.reloader.status(),
            domains,
            others,
            zones,
        }
    }

    /// The fragment the script puts into `<main>`.
    pub(super) fn render(&self) -> Markup {
        let reload_at = at(self.reload.last_ok);
        html! {
            div #summary data-ready=(if self.ready { "1" } else { "0" }) data-now=(clock(self.now)) {
                @if let Some(e) = &self.reload.last_error {
                    p.error { "Last reload FAILED: " (e) " — the config from " (reload_at) " is still in force." }
                } @else {
                    p.muted { "Config and zones loaded " (reload_at) " (" (self.reload.reloads_ok) " reloads, " (self.reload.reloads_failed) " rejected)." }
                }
            }
            @for d in &self.domains {
                section.domain {
                    h2 { (d.name) }
                    (self.targets(&d.rows))
                    h3 { "What a phone is told now" }
                    (told(&d.told))
                }
            }
            @if !self.others.is_empty() {
                section.domain {
                    h2 { "Other targets" }
                    (self.targets(&self.others))
                }
            }
            section #zones {
                h2 { "Zones" }
                @if self.zones.is_empty() {
                    p.muted { "No static zones." }
                }
                @for z in &self.zones {
                    details id=(format!("zone-{}", bare(z.summary.zone.as_str()))) {
                        summary {
                            strong { (bare(z.summary.zone.as_str())) }
                            " — " (z.summary.records) " records, " (format!("{:?}", z.summary.mode).to_lowercase())
                            @if z.summary.read_only { ", read-only" }
                            span.muted { " " (z.summary.file.display()) }
                        }
                        @if let Some(st) = &z.summary.secondary {
                            p.secondary data-zone=(bare(z.summary.zone.as_str())) {
                                @if st.serving { span.badge.up { "serving" } } @else { span.badge.down { "not served" } }
                                " secondary"
                                @if let Some(c) = &st.catalog { " (catalog " (bare(c.as_str())) ")" }
                                @if let Some(serial) = st.serial { ", serial " (serial) }
                                @if let Some(t) = &st.last_transfer {
                                    ", last " (format!("{:?}", t.kind).to_uppercase()) " at " (at(t.at))
                                    " (" (t.records) " records, " (t.bytes) " bytes)"
                                }
                                @if let Some(n) = st.next_check { ", next check " (at(n)) }
                                @if let Some(e) = st.expires_at { ", expires " (at(e)) }
                                @if let Some(err) = &st.error { br; span.error { "error: " (err) } }
                            }
                        }
                        ul.records {
                            @for r in &z.records { li { code { (r) } } }
                        }
                    }
                }
            }
        }
    }

    fn targets(&self, rows: &[Row]) -> Markup {
        html! {
            @if rows.is_empty() {
                p.muted { "No targets discovered." }
            } @else {
                div.scroll {
                    table.targets {
                        thead { tr {
                            th { "Target" } th { "Host" } th { "State" } th { "Code" } th { "RTT" }
                            th { "Since" } th { "Last hour" } th {}
                        } }
                        tbody {
                            @for r in rows {
                                tr data-target=(r.key) data-state=(r.state) {
                                    td data-label="Target" { code { (r.key) } }
                                    td data-label="Host" { (r.host) }
                                    td data-label="State" {
                                        span.badge .(r.state) { (r.state) }
                                        " " span.reason { (r.reason) }
                                    }
                                    td data-label="Code" { (r.last_code.map_or_else(|| "–".to_owned(), |c| c.to_string())) }
                                    td data-label="RTT" { (r.rtt_ms.map_or_else(|| "–".to_owned(), |ms| format!("{ms:.1} ms"))) }
                                    td data-label="Since" {
                                        @if let Some(s) = r.since {
                                            time datetime=(clock(SystemTime::UNIX_EPOCH + Duration::from_secs(s))) {
                                                (ago(self.now, s))
                                            }
                                        }
                                    }
                                    td data-label="Last hour" { (strip(&r.strip)) }
                                    td.actions {
                                        @if r.state == "drained" {
                                            button.enable type="button" data-target=(r.key) { "Enable" }
                                        } @else {
                                            button.drain type="button" data-target=(r.key) { "Drain…" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn told(items: &[Told]) -> Markup {
    html! {
        ul.told {
            @for t in items {
                li {
                    details id=(format!("explain-{}-{}", t.qtype, t.name)) {
                        summary {
                            code { (t.name) " " (t.qtype) } " → "
                            @if t.answer.is_empty() {
                                span.badge.down { (t.rcode) }
                            } @else {
                                span.answer { (t.answer.len()) " record" @if t.answer.len() != 1 { "s" } }
                            }
                            @if let Some(a) = &t.all_down { " " span.badge.down { "all down: " (a) } }
                            " " span.link { "explain" }
                        }
                        @if !t.decisions.is_empty() {
                            table.explain {
                                thead { tr { th { "Section" } th { "Action" } th { "Record" } th { "Why" } } }
                                tbody {
                                    @for (section, action, rec, why) in &t.decisions {
                                        tr.(action) { td { (section) } td { (action) } td { code { (rec) } } td { (why) } }
                                    }
                                }
                            }
                        }
                    }
                    ul.records {
                        @for a in &t.answer { li { code { (a) } } }
                        @for a in &t.additional { li.additional { code { (a) } } }
                    }
                }
            }
        }
    }
}

/// The last hour as 60 one-minute bars: height by average RTT, colour by outcome.
fn strip(buckets: &[Option<Bucket>]) -> Markup {
    const W: usize = 3;
    let width = buckets.len() * W;
    let mut svg = format!(
        r#"<svg class="strip" viewBox="0 0 {width} 20" width="{width}" height="20" role="img" aria-label="last hour: RTT and up/down per minute">"#
    );
    for (i, b) in buckets.iter().enumerate() {
        let x = i * W;
        let Some(b) = b else {
            svg.push_str(&format!(
                r#"<rect class="n" x="{x}" y="18" width="{}" height="2"/>"#,
                W - 1
            ));
            continue;
        };
        let class = if b.down {
            "d"
        } else if b.failed > 0 {
            "w"
        } else {
            "u"
        };
        let h = b.rtt_avg_ms().map_or(20.0, |ms| {
            // 0.1 ms .. 1 s on a log scale, 4..20 px.
            (4.0 + 16.0 * ((ms.max(0.1) * 10.0).log10() / 4.0)).clamp(4.0, 20.0)
        });
        let rtt = b.rtt_avg_ms().map_or_else(
            || "no answer".to_owned(),
            |ms| format!("avg {ms:.1} ms, max {:.1} ms", b.rtt_max_ms),
        );
        let minute = clock(SystemTime::UNIX_EPOCH + Duration::from_secs(b.minute * 60));
        svg.push_str(&format!(
            r#"<rect class="{class}" x="{x}" y="{:.1}" width="{}" height="{h:.1}"><title>{} — {} probes, {} failed{}; {rtt}</title></rect>"#,
            20.0 - h,
            W - 1,
            minute.get(11..16).unwrap_or_default(),
            b.probes,
            b.failed,
            if b.down { ", down" } else { "" },
        ));
    }
    svg.push_str("</svg>");
    // Built from numbers and fixed words only: nothing to escape.
    PreEscaped(svg)
}

fn clock(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn at(unix: f64) -> String {
    clock(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(unix.max(0.0)))
}

fn ago(now: SystemTime, since: u64) -> String {
    let then = SystemTime::UNIX_EPOCH + Duration::from_secs(since);
    let secs = now.duration_since(then).unwrap_or_default().as_secs();
    let d = if secs >= 3600 {
        Duration::from_secs(secs / 60 * 60)
    } else {
        Duration::from_secs(secs)
    };
    format!("{} ago", humantime::format_duration(d))
}
