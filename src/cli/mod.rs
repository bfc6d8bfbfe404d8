//! The command-line client: `sipdns status`, `targets`, `drain`, `enable`, `explain`,
//! `zones`, `records`, `reload` — each one call (or two) of the REST API, printed as an
//! aligned table for people or, with `--json`, as the API's JSON for scripts. Like
//! `unbound-control` and `consul`, it is the same binary as the server.
//!
//! The API address and token come from `--api URL --token-file FILE`, or from the server's
//! config (`-c CONFIG`: `api.listen`, `api.token_file` or the `api.token_env` variable).
//! Exit status: 0 success, 1 the API refused or could not be reached (its message is
//! printed), 2 a usage error.
//!
//! # Layout
//! - this module: the arguments and what each command fetches and prints;
//! - `view`: the API's JSON rendered as tables and text;
//! - [`client`]: the HTTP client over the API;
//! - [`table`]: aligned text tables.

pub mod client;
pub mod table;
mod view;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use client::{Client, ClientError};
use table::Table;
pub use view::targets_table;
use view::{explain_text, records_table, state_of, text};

/// Where the API is and how to sign in; `--json` output.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// The server's config file: the API address (`api.listen`) and token
    /// (`api.token_file`, or the `api.token_env` variable) are read from it.
    #[arg(short, long, global = true)]
    pub config: Option<PathBuf>,
    /// The API's base URL, e.g. `http://127.0.0.1:8053` (overrides the config).
    #[arg(long, global = true, value_name = "URL")]
    pub api: Option<String>,
    /// File holding the API token (overrides the config; else `SIPDNS_API_TOKEN`).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The client commands. (The `conn` fields are the shared options, documented on [`Conn`];
/// clap would print a doc comment on them as help text.)
#[allow(missing_docs)]
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Readiness, last reload and targets up / down per SIP domain.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Every SIP target: state, reason, last code, RTT, since, drains.
    Targets {
        #[command(flatten)]
        conn: Conn,
    },
    /// Hand a target out as if down (still probed), optionally for a time.
    Drain {
        /// `ADDRESS:PORT/TRANSPORT` (`192.0.2.10:5060/udp`, `[2001:db8::1]:5061/tls`);
        /// the port defaults to 5060 (5061 for tls).
        target: String,
        /// End the drain by itself after this long (`30m`, `2h`).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// Why (shown on the status page, in the state file and in events).
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Hand a drained target out again.
    Enable {
        /// `ADDRESS[:PORT]/TRANSPORT`.
        target: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// What a phone is told for NAME TYPE now, and why each record is kept, moved or
    /// withheld.
    Explain {
        /// The name asked for, e.g. `_sip._udp.pbx.example.org`.
        name: String,
        /// NAPTR, SRV, A or AAAA (any type the API knows).
        #[arg(value_name = "TYPE", default_value = "A")]
        rtype: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// The static zones.
    Zones {
        #[command(flatten)]
        conn: Conn,
    },
    /// A zone's records; `add NAME TYPE FIELD=VALUE...` or `rm INDEX` changes them.
    Records {
        /// The zone, e.g. `pbx.example.org`.
        zone: String,
        #[command(subcommand)]
        action: Option<RecordAction>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Re-read the config and zones now (a bad version is rejected; the running one stays).
    Reload {
        #[command(flatten)]
        conn: Conn,
    },
}

/// A change to a zone's records.
#[derive(Debug, Clone, Subcommand)]
pub enum RecordAction {
    /// Add a record: `add sip3 A address=192.0.2.13`, `add _sip._udp SRV priority=10
    /// weight=1 port=5060 target=sip3`.
    Add {
        /// Owner, relative to the zone (`@` for the apex).
        name: String,
        /// Record type.
        #[arg(value_name = "TYPE")]
        rtype: String,
        /// The type's fields as `field=value` (see the zone file format).
        #[arg(value_name = "FIELD=VALUE")]
        fields: Vec<String>,
    },
    /// Remove the record at INDEX (as `sipdns records ZONE` numbers them).
    Rm {
        /// The record's index.
        index: usize,
        /// Remove only if the zone is still at this version (its `ETag`, as `--json`
        /// scripts read it); default: the version read just before.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
}

/// A failure, and the exit status it gives.
#[derive(Debug)]
enum Failure {
    /// Wrong arguments or setup: exit 2.
    Usage(String),
    /// The API said no or could not be reached: exit 1.
    Api(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Self::Api(e.to_string())
    }
}

/// Runs one client command; returns the exit status.
pub fn run(cmd: ClientCommand) -> ExitCode {
    match execute(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Api(m)) => {
            eprintln!("sipdns: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(m)) => {
            eprintln!("sipdns: {m}");
            ExitCode::from(2)
        }
    }
}

fn conn_of(cmd: &ClientCommand) -> &Conn {
    match cmd {
        ClientCommand::Status { conn }
        | ClientCommand::Targets { conn }
        | ClientCommand::Drain { conn, .. }
        | ClientCommand::Enable { conn, .. }
        | ClientCommand::Explain { conn, .. }
        | ClientCommand::Zones { conn }
        | ClientCommand::Records { conn, .. }
        | ClientCommand::Reload { conn } => conn,
    }
}

fn execute(cmd: ClientCommand) -> Result<(), Failure> {
    let conn = conn_of(&cmd).clone();
    let client = connect(&conn)?;
    let json = conn.json;
    match cmd {
        ClientCommand::Status { .. } => status(&client, json),
        ClientCommand::Targets { .. } => {
            let v = client.get("/api/v1/targets")?;
            if json {
                return print_json(&v);
            }
            print(&targets_table(&v, SystemTime::now()).render())
        }
        ClientCommand::Drain {
            target,
            duration,
            note,
            ..
        } => {
            let path = admin_path(&target, "drain")?;
            let mut body = serde_json::Map::new();
            if let Some(d) = duration {
                humantime::parse_duration(&d).map_err(|e| {
                    Failure::Usage(format!(
                        "--for {d:?} is not a duration ({e}); write e.g. 30m"
                    ))
                })?;
                body.insert("duration".into(), json!(d));
            }
            if let Some(n) = note {
                body.insert("note".into(), json!(n));
            }
            body.insert("by".into(), json!(whoami()));
            let v = client.post(&path, Some(&Value::Object(body)))?;
            if json {
                return print_json(&v);
            }
            let until = v["until"]
                .as_str()
                .map_or_else(|| " until enabled".to_owned(), |u| format!(" until {u}"));
            print(&format!("{} drained{until}\n", text(&v["target"])))
        }
        ClientCommand::Enable { target, .. } => {
            let v = client.post(&admin_path(&target, "enable")?, None)?;
            if json {
                return print_json(&v);
            }
            print(&format!("{} enabled\n", text(&v["target"])))
        }
        ClientCommand::Explain { name, rtype, .. } => {
            let v = client.get(&format!(
                "/api/v1/explain?name={}&type={}",
                client::encode(&name),
                client::encode(&rtype)
            ))?;
            if json {
                return print_json(&v);
            }
            print(&explain_text(&v))
        }
        ClientCommand::Zones { .. } => {
            let v = client.get("/api/v1/zones")?;
            if json {
                return print_json(&v);
            }
            let mut t = Table::new(&["ZONE", "MODE", "FORMAT", "RECORDS", "FILE"]);
            for z in v.as_array().into_iter().flatten() {
                t.row(vec![
                    text(&z["zone"]).trim_end_matches('.').to_owned(),
                    text(&z["mode"]),
                    text(&z["format"]),
                    text(&z["records"]),
                    text(&z["file"]),
                ]);
            }
            let mut out = t.render();
            // Zones transferred from a primary (zones.secondary): where each one stands.
            let secondary: Vec<&Value> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|z| &z["secondary"])
                .filter(|s| s.is_object())
                .collect();
            if !secondary.is_empty() {
                let mut t = Table::new(&[
                    "SECONDARY",
                    "ROLE",
                    "SERVING",
                    "SERIAL",
                    "LAST TRANSFER",
                    "ERROR",
                ]);
                for s in secondary {
                    let last = &s["last_transfer"];
                    t.row(vec![
                        text(&s["zone"]).trim_end_matches('.').to_owned(),
                        text(&s["role"]),
                        text(&s["serving"]),
                        text(&s["serial"]),
                        if last.is_object() {
                            format!("{} {} records", text(&last["kind"]), text(&last["records"]))
                        } else {
                            "-".to_owned()
                        },
                        text(&s["error"]),
                    ]);
                }
                out.push('\n');
                out.push_str(&t.render());
            }
            print(&out)
        }
        ClientCommand::Records { zone, action, .. } => {
            let path = format!("/api/v1/zones/{}", client::encode(&zone));
            let v = match action {
                None => client.get(&path)?,
                Some(RecordAction::Add {
                    name,
                    rtype,
                    fields,
                }) => {
                    let rec = record_doc(&name, &rtype, &fields)?;
                    client.post(&format!("{path}/records"), Some(&rec))?
                }
                Some(RecordAction::Rm { index, if_match }) => {
                    // The index is the one of the version read now (or the one given).
                    let tag = match if_match {
                        Some(t) => Some(t),
                        None => client.get_tagged(&path)?.1,
                    };
                    client.delete(&format!("{path}/records/{index}"), tag.as_deref())?
                }
            };
            if json {
                return print_json(&v);
            }
            print(&records_table(&v).render())
        }
        ClientCommand::Reload { .. } => {
            let v = client.post("/api/v1/reload", None)?;
            if json {
                return print_json(&v);
            }
            print("reloaded\n")
        }
    }
}

/// The API client from the connection options.
fn connect(conn: &Conn) -> Result<Client, Failure> {
    let mut base = conn.api.clone();
    let mut token = None;
    if let Some(path) = &conn.config {
        let cfg = crate::config::Config::load(path).map_err(|e| Failure::Usage(format!("{e}")))?;
        if base.is_none() {
            let Some(mut addr) = cfg.api.listen else {
                return Err(Failure::Usage(format!(
                    "{}: api.listen is null: the API is off",
                    path.display()
                )));
            };
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            base = Some(format!("http://{addr}"));
        }
        if conn.token_file.is_none() {
            token = match &cfg.api.token_file {
                Some(f) => Some(read_token(f)?),
                None => std::env::var(&cfg.api.token_env).ok(),
            };
        }
    }
    if let Some(f) = &conn.token_file {
        token = Some(read_token(f)?);
    }
    let token = token.or_else(|| std::env::var("SIPDNS_API_TOKEN").ok());
    let base = base.unwrap_or_else(|| "http://127.0.0.1:8053".to_owned());
    if !base.starts_with("http://") && !base.starts_with("https://") {
        return Err(Failure::Usage(format!(
            "--api {base:?}: write the URL as http://HOST:PORT"
        )));
    }
    Ok(Client::new(&base, token.map(|t| t.trim().to_owned())))
}

fn read_token(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_owned())
        .map_err(|e| {
            Failure::Usage(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })
}

/// Who is draining: `$USER@host`, or what is known of it.
fn whoami() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "someone".to_owned());
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    match host {
        Some(h) => format!("{user}@{h} (cli)"),
        None => format!("{user} (cli)"),
    }
}

/// `/api/v1/targets/ADDR:PORT/TRANSPORT/ACTION` from `ADDR[:PORT]/TRANSPORT`.
fn admin_path(target: &str, action: &str) -> Result<String, Failure> {
    let usage = |why: &str| {
        Failure::Usage(format!(
            "{target:?}: {why}; write ADDRESS[:PORT]/TRANSPORT, e.g. 192.0.2.10:5060/udp"
        ))
    };
    let (addr, transport) = target
        .rsplit_once('/')
        .ok_or_else(|| usage("no /TRANSPORT"))?;
    let transport = transport.to_ascii_lowercase();
    let default_port = match transport.as_str() {
        "udp" | "tcp" => 5060,
        "tls" => 5061,
        _ => return Err(usage("the transport is udp, tcp or tls")),
    };
    let with_port = if addr.parse::<std::net::IpAddr>().is_ok() {
        match addr.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("[{v6}]:{default_port}"),
            Err(_) => format!("{addr}:{default_port}"),
        }
    } else {
        addr.to_owned()
    };
    let key: crate::target::TargetKey = format!("{with_port}/{transport}")
        .parse()
        .map_err(|e: String| usage(&e))?;
    let sock = std::net::SocketAddr::new(key.ip, key.port);
    Ok(format!(
        "/api/v1/targets/{}/{}/{action}",
        client::encode(&sock.to_string()),
        key.transport.as_str()
    ))
}

/// A record document from `NAME TYPE field=value...`: numbers stay numbers.
fn record_doc(name: &str, rtype: &str, fields: &[String]) -> Result<Value, Failure> {
    let mut doc = serde_json::Map::new();
    doc.insert("name".into(), json!(name));
    doc.insert("type".into(), json!(rtype.to_ascii_uppercase()));
    for f in fields {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("{f:?}: write record fields as field=value")))?;
        let value = v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n));
        doc.insert(k.to_owned(), value);
    }
    Ok(Value::Object(doc))
}

fn status(client: &Client, json: bool) -> Result<(), Failure> {
    let ready = client.get_any("/readyz")?;
    let targets = client.get("/api/v1/targets")?;
    if json {
        return print_json(&json!({ "readiness": ready, "targets": targets }));
    }
    let mut t = Table::plain();
    t.row(vec![
        "ready".into(),
        if ready["ready"] == json!(true) {
            "yes"
        } else {
            "no"
        }
        .into(),
    ]);
    t.row(vec!["zones".into(), text(&ready["zones"])]);
    t.row(vec![
        "first probe round".into(),
        text(&ready["first_probe_round"]),
    ]);
    let r = &ready["reload"];
    let last_ok = r["last_ok"]
        .as_f64()
        .map(|s| {
            humantime::format_rfc3339_seconds(
                SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s.max(0.0)),
            )
            .to_string()
        })
        .unwrap_or_default();
    let reload = match r["last_error"].as_str() {
        Some(e) => format!("FAILED: {e} (running config from {last_ok})"),
        None => format!("ok at {last_ok}"),
    };
    t.row(vec!["last reload".into(), reload]);
    let mut by_domain: std::collections::BTreeMap<String, [usize; 4]> = Default::default();
    for row in targets.as_array().into_iter().flatten() {
        let slot = match state_of(row).as_str() {
            "up" => 0,
            "down" => 1,
            "drained" => 3,
            _ => 2,
        };
        for d in row["domains"].as_array().into_iter().flatten() {
            let d = text(d);
            by_domain
                .entry(d.trim_end_matches('.').to_owned())
                .or_default()[slot] += 1;
        }
    }
    for (d, [up, down, unknown, drained]) in by_domain {
        t.row(vec![
            d,
            format!("{up} up, {down} down, {unknown} unknown, {drained} drained"),
        ]);
    }
    print(&t.render())
}

fn print_json(v: &Value) -> Result<(), Failure> {
    let mut s = serde_json::to_string_pretty(v).map_err(|e| Failure::Api(e.to_string()))?;
    s.push('\n');
    print(&s)
}

fn print(s: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`sipdns targets | head`) is not an error worth reporting.
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
    Ok(())
}

#[cfg(test)]
mod tests;
