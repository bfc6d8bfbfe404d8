//! The REST API over real HTTP on loopback: every route, each error case, the zone files in
//! `zones/` (changed exactly when the API says so), DNS answers (changed at once), restarts
//! (changes survive), readiness and liveness.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use hickory_proto::{op::ResponseCode, rr::RecordType};
use serde_json::{Value, json};
use sipdns::{
    api::{self, AdminError, ApiState, ApiToken, TargetControl, routes::Access},
    health::AdminState,
    target::TargetKey,
};
use tokio::sync::watch;

use crate::common::{
    client::{self, query},
    http::{Client, Reply},
    server::{self, API_TOKEN, TestServer},
    snapshot::snapshot,
};

const PBX: &str = "zone: pbx.example.org
ttl: 300
records:
  - { name: '@', type: NAPTR, order: 100, preference: 50, flags: s, service: SIP+D2U, replacement: _sip._udp }
  - { name: _sip._udp, type: SRV, priority: 10, weight: 1, port: 5060, target: server1 }
  - { name: server1, type: A, address: 192.0.2.10 }
  - { name: '@', type: A, address: 192.0.2.10 }
";

const NET: &str = "$ORIGIN example.net.
$TTL 300
@   IN SOA ns1.example.net. hostmaster.example.net. ( 1 3600 600 86400 30 )
    IN NS  ns1.example.net.
ns1 IN A   192.0.2.53
gw  IN A   192.0.2.99
";

async fn start() -> TestServer {
    server::start_with_api(
        "",
        &[("pbx.example.org.yaml", PBX), ("example.net.zone", NET)],
    )
    .await
}

fn api(s: &TestServer) -> Client {
    Client::new(s.api.expect("API enabled"), Some(API_TOKEN))
}

fn zones_dir(s: &TestServer) -> std::path::PathBuf {
    s.dir.path().join("zones")
}

/// (rcode, answer data) for a query over UDP.
async fn dns(s: &TestServer, name: &str, qtype: RecordType) -> (ResponseCode, Vec<String>) {
    let (m, _) = client::udp(s.dns, &query(name, qtype, Some(1232))).await;
    let data = m
        .answers
        .iter()
        .filter(|r| r.record_type() == qtype)
        .map(|r| r.data.to_string())
        .collect();
    (m.metadata.response_code, data)
}

fn etag(r: &Reply) -> String {
    r.header("etag")
        .unwrap_or_else(|| panic!("no ETag: {} {}", r.status, r.text()))
        .to_owned()
}

fn assert_status(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "body: {}", r.text());
}

/// The error body: (error code, field).
fn error_of(r: &Reply) -> (String, Option<String>) {
    let v = r.json();
    (
        v["error"].as_str().unwrap_or_default().to_owned(),
        v["field"].as_str().map(str::to_owned),
    )
}

/// The index of the record (name, type) in a zone document.
fn index_of(doc: &Value, name: &str, rtype: &str) -> usize {
    doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .position(|x| x["name"] == name && x["type"] == rtype)
        .unwrap_or_else(|| panic!("no {name} {rtype} in {doc}"))
}

/// A concrete path for a route template.
fn concrete(path: &str) -> String {
    path.replace("{zone}", "pbx.example.org")
        .replace("{index}", "0")
        .replace("{addr}", "192.0.2.10:5060")
        .replace("{transport}", "udp")
}

#[tokio::test]
async fn liveness_readiness_and_metrics_are_open() {
    let s = start().await;
    let open = Client::new(s.api.unwrap(), None);
    let r = open.get("/livez").await;
    assert_status(&r, 200);
    assert_eq!(r.json()["status"], "ok");
    let r = open.get("/readyz").await;
    assert_status(&r, 200);
    // Open, so only the verdict and a reason code.
    assert_eq!(r.json(), json!({"ready": true, "reason": "ok"}));
    // The detail is behind the token.
    assert_status(&open.get("/api/v1/status").await, 401);
    let r = api(&s).get("/api/v1/status").await;
    assert_status(&r, 200);
    let v = r.json();
    assert_eq!(v["ready"], true);
    assert_eq!(v["config_loaded"], true);
    assert_eq!(v["zones"], 2);
    // No SIP domain with probe-able targets: the first round is done at once.
    assert_eq!(v["first_probe_round"], "done");
    assert_eq!(v["reload"]["last_error"], Value::Null);
    let r = open.get("/metrics").await;
    assert_status(&r, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert!(r.text().contains("# HELP sipdns_dns_answers_total"));
}

#[tokio::test]
async fn every_protected_route_needs_the_token() {
    let s = start().await;
    let before = snapshot(&zones_dir(&s));
    let addr = s.api.unwrap();
    let routes = api::table();
    assert!(routes.iter().any(|r| r.access == Access::Token));
    for route in routes.iter().filter(|r| r.access == Access::Token) {
        let path = concrete(route.path);
        let body = br#"{"name": "x", "type": "A", "address": "192.0.2.1"}"#;
        let send = |token: Option<&'static str>, scheme: &'static str| {
            let path = path.clone();
            async move {
                let auth = token.map(|t| format!("{scheme} {t}"));
                let mut h = vec![("Content-Type", "application/json")];
                if let Some(a) = &auth {
                    h.push(("Authorization", a.as_str()));
                }
                crate::common::http::request(addr, route.method, &path, &h, Some(body)).await
            }
        };
        for (token, scheme, invalid) in [
            (None, "Bearer", false),
            (Some("wrong-token"), "Bearer", true),
            (Some(API_TOKEN), "Basic", false),
            (Some(&API_TOKEN[..API_TOKEN.len() - 1]), "Bearer", true),
        ] {
            let r = send(token, scheme).await;
            assert_eq!(r.status, 401, "{} {path} with {token:?}", route.method);
            let challenge = r.header("www-authenticate").unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
            assert_eq!(challenge.contains("invalid_token"), invalid, "{challenge}");
            assert_eq!(error_of(&r).0, "unauthorized");
            assert!(!r.text().contains(API_TOKEN));
        }
    }
    assert_eq!(
        snapshot(&zones_dir(&s)),
        before,
        "a refused request changed a file"
    );
    assert_eq!(
        dns(&s, "server1.pbx.example.org.", RecordType::A).await.1,
        vec!["192.0.2.10"]
    );
}

#[tokio::test]
async fn without_a_configured_token_every_protected_route_is_refused() {
    // token_env names a variable no test sets, and there is no token_file.
    let config = "dns:\n  listen: [\"127.0.0.1:0\"]\napi:\n  listen: \"127.0.0.2:0\"\n  token_env: SIPDNS_TEST_NEVER_SET_4b1e\n";
    let s = server::start(config, &[("pbx.example.org.yaml", PBX)]).await;
    let c = Client::new(s.api.unwrap(), Some(""));
    for token in [None, Some(""), Some("anything")] {
        let c = Client::new(c.addr, token);
        assert_status(&c.get("/api/v1/zones").await, 401);
        assert_status(&c.get("/api/v1/openapi.json").await, 401);
    }
    assert_status(&c.get("/livez").await, 200);
    assert_status(&c.get("/readyz").await, 200);
}

#[tokio::test]
async fn zones_are_listed_and_read_with_their_etag() {
    let s = start().await;
    let c = api(&s);
    let r = c.get("/api/v1/zones").await;
    assert_status(&r, 200);
    let list = r.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["zone"], "example.net.");
    assert_eq!(list[0]["format"], "zone_file");
    assert_eq!(list[0]["read_only"], true);
    assert_eq!(list[0]["records"], 3);
    assert_eq!(list[1]["zone"], "pbx.example.org.");
    assert_eq!(list[1]["format"], "yaml");
    assert_eq!(list[1]["read_only"], false);
    assert_eq!(list[1]["records"], 4);

    let r = c.get("/api/v1/zones/pbx.example.org").await;
    assert_status(&r, 200);
    assert_eq!(etag(&r), list[1]["etag"].as_str().unwrap());
    let doc = r.json();
    assert_eq!(doc["zone"], "pbx.example.org.");
    assert_eq!(doc["mode"], "override");
    assert_eq!(doc["ttl"], 300);
    assert_eq!(doc["records"].as_array().unwrap().len(), 4);
    // The trailing dot is optional in the URL; the ETag is the same.
    let r2 = c.get("/api/v1/zones/pbx.example.org.").await;
    assert_eq!(etag(&r2), etag(&r));
    // A zone file is readable too (read-only).
    let r = c.get("/api/v1/zones/example.net").await;
    assert_status(&r, 200);
    assert!(r.text().contains("192.0.2.99"));
}

#[tokio::test]
async fn record_edits_persist_take_effect_at_once_and_survive_a_restart() {
    let mut s = start().await;
    let c = api(&s);
    let file = zones_dir(&s).join("pbx.example.org.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let tag0 = etag(&c.get("/api/v1/zones/pbx.example.org").await);
    assert_eq!(
        dns(&s, "server2.pbx.example.org.", RecordType::A).await.0,
        ResponseCode::NXDomain
    );

    // Add a record (with If-Match): 201, the file and the DNS answer change at once.
    let r = c
        .json(
            "POST",
            "/api/v1/zones/pbx.example.org/records",
            &[("If-Match", &tag0)],
            &json!({"name": "server2", "type": "A", "address": "192.0.2.20"}),
        )
        .await;
    assert_status(&r, 201);
    let tag1 = etag(&r);
    assert_ne!(tag1, tag0);
    let doc = r.json();
    assert!(
        doc["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["address"] == "192.0.2.20")
    );
    assert_eq!(
        doc["soa"]["serial"], 2,
        "a record edit bumps the SOA serial"
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert_ne!(written, original);
    assert!(written.contains("192.0.2.20"), "{written}");
    assert_eq!(
        dns(&s, "server2.pbx.example.org.", RecordType::A).await,
        (ResponseCode::NoError, vec!["192.0.2.20".to_owned()])
    );
    // No temp file is left behind.
    assert_eq!(snapshot(&zones_dir(&s)).len(), 2);

    // Add an SRV record without If-Match (allowed: a record add is a read-modify-write
    // under the lock, so it cannot lose a concurrent one).
    let r = c
        .json(
            "POST",
            "/api/v1/zones/pbx.example.org/records",
            &[],
            &json!({"name": "_sip._udp", "type": "SRV", "priority": 20, "weight": 1, "port": 5060, "target": "server2"}),
        )
        .await;
    assert_status(&r, 201);
    let tag2 = etag(&r);
    let (_, srv) = dns(&s, "_sip._udp.pbx.example.org.", RecordType::SRV).await;
    assert_eq!(srv.len(), 2, "{srv:?}");

    // Delete a record by index: needs If-Match (428 without), 412 with a stale one.
    let doc = c.get("/api/v1/zones/pbx.example.org").await.json();
    let index = index_of(&doc, "server1", "A");
    let path = format!("/api/v1/zones/pbx.example.org/records/{index}");
    let before = std::fs::read(&file).unwrap();
    let r = c.delete(&path, &[]).await;
    assert_status(&r, 428);
    let r = c.delete(&path, &[("If-Match", &tag1)]).await;
    assert_status(&r, 412);
    assert_eq!(error_of(&r).0, "precondition_failed");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "a refused delete wrote the file"
    );
    assert_eq!(
        dns(&s, "server1.pbx.example.org.", RecordType::A).await.1,
        vec!["192.0.2.10"]
    );
    let r = c.delete(&path, &[("If-Match", &tag2)]).await;
    assert_status(&r, 200);
    let tag3 = etag(&r);
    assert_ne!(std::fs::read(&file).unwrap(), before);
    assert_eq!(
        dns(&s, "server1.pbx.example.org.", RecordType::A).await.0,
        ResponseCode::NXDomain
    );

    // The changes survive a restart: same zone, same ETag, same answers.
    s.restart().await;
    let c = api(&s);
    assert_eq!(etag(&c.get("/api/v1/zones/pbx.example.org").await), tag3);
    assert_eq!(
        dns(&s, "server2.pbx.example.org.", RecordType::A).await.1,
        vec!["192.0.2.20"]
    );
    assert_eq!(
        dns(&s, "server1.pbx.example.org.", RecordType::A).await.0,
        ResponseCode::NXDomain
    );
}

#[tokio::test]
async fn zones_are_created_replaced_and_deleted() {
    let mut s = start().await;
    let c = api(&s);
    let lab = json!({
        "zone": "lab.example.org",
        "ttl": 60,
        "records": [
            {"name": "gw", "type": "A", "address": "192.0.2.44"},
            {"name": "_sip._udp", "type": "SRV", "priority": 10, "weight": 1, "port": 5060, "target": "gw"}
        ]
    });
    let r = c.json("POST", "/api/v1/zones", &[], &lab).await;
    assert_status(&r, 201);
    assert_eq!(r.header("location"), Some("/api/v1/zones/lab.example.org"));
    let tag = etag(&r);
    let file = zones_dir(&s).join("lab.example.org.yaml");
    assert!(file.is_file(), "the new zone's file was not written");
    assert_eq!(
        dns(&s, "gw.lab.example.org.", RecordType::A).await.1,
        vec!["192.0.2.44"]
    );
    // Creating it again: 409, nothing changes.
    let before = snapshot(&zones_dir(&s));
    let r = c.json("POST", "/api/v1/zones", &[], &lab).await;
    assert_status(&r, 409);
    assert_eq!(snapshot(&zones_dir(&s)), before);

    // Replace: If-Match honoured.
    let mut new = lab.clone();
    new["records"][0]["address"] = json!("192.0.2.45");
    let r = c
        .json(
            "PUT",
            "/api/v1/zones/lab.example.org",
            &[("If-Match", "\"0000000000000000\"")],
            &new,
        )
        .await;
    assert_status(&r, 412);
    assert_eq!(snapshot(&zones_dir(&s)), before);
    assert_eq!(
        dns(&s, "gw.lab.example.org.", RecordType::A).await.1,
        vec!["192.0.2.44"]
    );
    let r = c
        .json(
            "PUT",
            "/api/v1/zones/lab.example.org",
            &[("If-Match", &tag)],
            &new,
        )
        .await;
    assert_status(&r, 200);
    let tag = etag(&r);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("192.0.2.45")
    );
    assert_eq!(
        dns(&s, "gw.lab.example.org.", RecordType::A).await.1,
        vec!["192.0.2.45"]
    );
    // PUT with the same content keeps the version.
    let r = c
        .json("PUT", "/api/v1/zones/lab.example.org", &[], &new)
        .await;
    assert_status(&r, 200);
    assert_eq!(etag(&r), tag);

    // Survives a restart.
    s.restart().await;
    let c = api(&s);
    assert_eq!(etag(&c.get("/api/v1/zones/lab.example.org").await), tag);
    assert_eq!(
        dns(&s, "gw.lab.example.org.", RecordType::A).await.1,
        vec!["192.0.2.45"]
    );

    // Delete: stale If-Match refused, then gone (file and answers), and still gone after a
    // restart.
    let r = c
        .delete("/api/v1/zones/lab.example.org", &[("If-Match", "\"1\"")])
        .await;
    assert_status(&r, 412);
    assert!(file.is_file());
    let r = c
        .delete("/api/v1/zones/lab.example.org", &[("If-Match", &tag)])
        .await;
    assert_status(&r, 204);
    assert!(!file.exists());
    assert_status(&c.get("/api/v1/zones/lab.example.org").await, 404);
    assert_ne!(
        dns(&s, "gw.lab.example.org.", RecordType::A).await.1,
        vec!["192.0.2.45"]
    );
    s.restart().await;
    let c = api(&s);
    assert_status(&c.get("/api/v1/zones/lab.example.org").await, 404);
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let s = start().await;
    let c = api(&s);
    let dir = zones_dir(&s);
    let before = snapshot(&dir);
    let tag = etag(&c.get("/api/v1/zones/pbx.example.org").await);
    let rec = "/api/v1/zones/pbx.example.org/records";

    // Not JSON: 400. Not declared as JSON: 415.
    let r = c
        .send(
            "POST",
            rec,
            &[("Content-Type", "application/json")],
            Some(b"{\"name\": "),
        )
        .await;
    assert_status(&r, 400);
    assert_eq!(error_of(&r).0, "bad_request");
    let r = c
        .send(
            "PUT",
            "/api/v1/zones/pbx.example.org",
            &[("Content-Type", "application/json")],
            Some(b"not json"),
        )
        .await;
    assert_status(&r, 400);
    let r = c
        .send("POST", rec, &[("Content-Type", "text/plain")], Some(b"{}"))
        .await;
    assert_status(&r, 415);

    // Invalid records: 422 naming the field.
    for (body, field) in [
        (
            json!({"name": "s", "type": "SRV", "priority": 1, "weight": 1, "target": "x"}),
            "port",
        ),
        (
            json!({"name": "s", "type": "SRV", "priority": 1, "port": 70000, "target": "x"}),
            "port",
        ),
        (
            json!({"name": "s", "type": "A", "address": "2001:db8::1"}),
            "address",
        ),
        (
            json!({"name": "s", "type": "A", "address": "192.0.2.1", "port": 5060}),
            "port",
        ),
        (
            json!({"name": "s", "type": "A", "adress": "192.0.2.1"}),
            "adress",
        ),
        (json!({"name": "s", "type": "MX"}), "type"),
        (
            json!({"name": "other.example.com.", "type": "A", "address": "192.0.2.1"}),
            "name",
        ),
        // RFC 1034 §3.6.2: no CNAME beside other data.
        (
            json!({"name": "server1", "type": "CNAME", "target": "x"}),
            "name",
        ),
    ] {
        let r = c.json("POST", rec, &[], &body).await;
        assert_status(&r, 422);
        let (code, f) = error_of(&r);
        assert_eq!(code, "invalid");
        let f = f.unwrap_or_default();
        assert!(
            f == field || f.ends_with(&format!(".{field}")),
            "{body}: field {f:?}, expected {field}"
        );
    }
    // In a whole zone document, the field path points into `records`.
    let mut doc = c.get("/api/v1/zones/pbx.example.org").await.json();
    doc["records"][1]["port"] = json!(-1);
    let r = c
        .json("PUT", "/api/v1/zones/pbx.example.org", &[], &doc)
        .await;
    assert_status(&r, 422);
    assert_eq!(error_of(&r).1.as_deref(), Some("records[1].port"));
    let mut doc = c.get("/api/v1/zones/pbx.example.org").await.json();
    doc["records"][2] =
        json!({"name": "server1", "type": "SRV", "priority": 1, "weight": 1, "target": "x"});
    let r = c
        .json("PUT", "/api/v1/zones/pbx.example.org", &[], &doc)
        .await;
    assert_status(&r, 422);
    assert_eq!(error_of(&r).1.as_deref(), Some("records[2].port"));
    // Several problems: all listed, the first on top.
    let mut doc = c.get("/api/v1/zones/pbx.example.org").await.json();
    let naptr = index_of(&doc, "@", "NAPTR");
    let a = index_of(&doc, "server1", "A");
    assert!(naptr < a);
    doc["records"][naptr]["order"] = Value::Null;
    doc["records"][a]["address"] = json!("2001:db8::1");
    let r = c
        .json("PUT", "/api/v1/zones/pbx.example.org", &[], &doc)
        .await;
    assert_status(&r, 422);
    let v = r.json();
    assert_eq!(v["field"], format!("records[{naptr}].order"));
    assert_eq!(v["errors"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["errors"][1]["field"], format!("records[{a}].address"));
    // The zone in the body is not the one in the URL.
    let mut doc = c.get("/api/v1/zones/pbx.example.org").await.json();
    doc["zone"] = json!("other.example.org");
    let r = c
        .json("PUT", "/api/v1/zones/pbx.example.org", &[], &doc)
        .await;
    assert_status(&r, 422);
    assert_eq!(error_of(&r).1.as_deref(), Some("zone"));
    let r = c
        .json(
            "POST",
            "/api/v1/zones",
            &[],
            &json!({"zone": "x.example.org", "mode": "sometimes"}),
        )
        .await;
    assert_status(&r, 422);
    assert_eq!(error_of(&r).1.as_deref(), Some("mode"));

    // Unknown zone: 404 on every zone route.
    let a = json!({"name": "h", "type": "A", "address": "192.0.2.1"});
    assert_status(&c.get("/api/v1/zones/nowhere.example.org").await, 404);
    let whole = json!({"zone": "nowhere.example.org"});
    assert_status(
        &c.json("PUT", "/api/v1/zones/nowhere.example.org", &[], &whole)
            .await,
        404,
    );
    assert_status(
        &c.delete("/api/v1/zones/nowhere.example.org", &[]).await,
        404,
    );
    assert_status(
        &c.json("POST", "/api/v1/zones/nowhere.example.org/records", &[], &a)
            .await,
        404,
    );
    assert_status(
        &c.delete(
            "/api/v1/zones/nowhere.example.org/records/0",
            &[("If-Match", "*")],
        )
        .await,
        404,
    );
    // A bad zone name or index in the URL: 400.
    assert_status(&c.get("/api/v1/zones/bad..name").await, 400);
    assert_status(
        &c.delete(
            "/api/v1/zones/pbx.example.org/records/first",
            &[("If-Match", &tag)],
        )
        .await,
        400,
    );
    // No such record index: 404.
    assert_status(
        &c.delete(
            "/api/v1/zones/pbx.example.org/records/99",
            &[("If-Match", &tag)],
        )
        .await,
        404,
    );

    // RFC 1035 zone files are read-only: 409.
    let net = "/api/v1/zones/example.net";
    let r = c.json("POST", &format!("{net}/records"), &[], &a).await;
    assert_status(&r, 409);
    assert_eq!(error_of(&r).0, "conflict");
    assert_status(
        &c.json("PUT", net, &[], &json!({"zone": "example.net"}))
            .await,
        409,
    );
    assert_status(&c.delete(net, &[]).await, 409);
    assert_status(
        &c.delete(&format!("{net}/records/0"), &[("If-Match", "*")])
            .await,
        409,
    );
    // So is creating a zone that exists as a zone file.
    assert_status(
        &c.json(
            "POST",
            "/api/v1/zones",
            &[],
            &json!({"zone": "example.net"}),
        )
        .await,
        409,
    );

    // An exact duplicate record: 409.
    let dup = json!({"name": "server1", "type": "A", "address": "192.0.2.10"});
    assert_status(&c.json("POST", rec, &[], &dup).await, 409);
    // A stale If-Match on a record add: 412.
    assert_status(
        &c.json("POST", rec, &[("If-Match", "\"stale\"")], &a).await,
        412,
    );

    assert_eq!(snapshot(&dir), before, "a refused request changed zones/");
    assert_eq!(etag(&c.get("/api/v1/zones/pbx.example.org").await), tag);
    assert_eq!(
        dns(&s, "server1.pbx.example.org.", RecordType::A).await.1,
        vec!["192.0.2.10"]
    );
    assert_eq!(
        dns(&s, "h.pbx.example.org.", RecordType::A).await.0,
        ResponseCode::NXDomain
    );
    // Unknown routes: 404 with the error body.
    let r = c.get("/api/v1/nothing").await;
    assert_status(&r, 404);
    assert_eq!(error_of(&r).0, "no_route");
}

#[tokio::test]
async fn a_failed_disk_write_changes_neither_the_file_nor_the_zone() {
    let s = start().await;
    let c = api(&s);
    let dir = zones_dir(&s);
    let before = snapshot(&dir);
    let tag = etag(&c.get("/api/v1/zones/pbx.example.org").await);
    // A directory where the temp file must go makes the write fail, even as root.
    let blocker = dir.join(".pbx.example.org.yaml.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let a = json!({"name": "server9", "type": "A", "address": "192.0.2.90"});
    let r = c
        .json("POST", "/api/v1/zones/pbx.example.org/records", &[], &a)
        .await;
    assert_status(&r, 500);
    assert!(error_of(&r).0 == "internal");
    let mut doc = c.get("/api/v1/zones/pbx.example.org").await.json();
    doc["records"][2]["address"] = json!("192.0.2.99");
    let r = c
        .json("PUT", "/api/v1/zones/pbx.example.org", &[], &doc)
        .await;
    assert_status(&r, 500);
    assert_eq!(snapshot(&dir), before);
    assert_eq!(etag(&c.get("/api/v1/zones/pbx.example.org").await), tag);
    assert_eq!(
        dns(&s, "server9.pbx.example.org.", RecordType::A).await.0,
        ResponseCode::NXDomain
    );
    assert_eq!(
        dns(&s, "server1.pbx.example.org.", RecordType::A).await.1,
        vec!["192.0.2.10"]
    );
    // Once the disk is writable again, the same request succeeds.
    std::fs::remove_dir(&blocker).unwrap();
    let r = c
        .json("POST", "/api/v1/zones/pbx.example.org/records", &[], &a)
        .await;
    assert_status(&r, 201);
    assert_eq!(
        dns(&s, "server9.pbx.example.org.", RecordType::A).await.1,
        vec!["192.0.2.90"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_lose_no_update() {
    let s = start().await;
    let c = api(&s);
    // Twenty record adds at once, no If-Match: every one lands.
    let mut adds = Vec::new();
    for i in 0..20 {
        let c = c.clone();
        adds.push(tokio::spawn(async move {
            let body = json!({"name": format!("h{i}"), "type": "A", "address": format!("192.0.2.{}", 100 + i)});
            c.json("POST", "/api/v1/zones/pbx.example.org/records", &[], &body)
                .await
                .status
        }));
    }
    for a in adds {
        assert_eq!(a.await.unwrap(), 201);
    }
    let doc = c.get("/api/v1/zones/pbx.example.org").await.json();
    assert_eq!(doc["records"].as_array().unwrap().len(), 24);
    let text = std::fs::read_to_string(zones_dir(&s).join("pbx.example.org.yaml")).unwrap();
    for i in 0..20 {
        assert!(
            text.contains(&format!("192.0.2.{}", 100 + i)),
            "h{i} lost from the file"
        );
        assert_eq!(
            dns(&s, &format!("h{i}.pbx.example.org."), RecordType::A)
                .await
                .1,
            vec![format!("192.0.2.{}", 100 + i)]
        );
    }

    // Two replaces from the same version: exactly one wins, the other gets 412.
    let r = c.get("/api/v1/zones/pbx.example.org").await;
    let tag = etag(&r);
    let doc = r.json();
    let mut puts = Vec::new();
    for addr in ["192.0.2.201", "192.0.2.202"] {
        let (c, tag) = (c.clone(), tag.clone());
        let mut d = doc.clone();
        d["records"][2]["address"] = json!(addr);
        puts.push(tokio::spawn(async move {
            c.json(
                "PUT",
                "/api/v1/zones/pbx.example.org",
                &[("If-Match", &tag)],
                &d,
            )
            .await
            .status
        }));
    }
    let mut codes = Vec::new();
    for p in puts {
        codes.push(p.await.unwrap());
    }
    codes.sort_unstable();
    assert_eq!(codes, vec![200, 412]);
}

#[tokio::test]
async fn explain_shows_the_answer_before_and_after_the_policy() {
    let s = server::start_with_api(
        "sip:\n  domains:\n    - name: pbx.example.org\n",
        &[("pbx.example.org.yaml", PBX)],
    )
    .await;
    let c = api(&s);
    let r = c
        .get("/api/v1/explain?name=_sip._udp.pbx.example.org&type=SRV")
        .await;
    assert_status(&r, 200);
    let v = r.json();
    assert_eq!(v["name"], "_sip._udp.pbx.example.org.");
    assert_eq!(v["type"], "SRV");
    assert_eq!(v["domain"], "pbx.example.org.");
    for side in ["before", "after"] {
        assert_eq!(v[side]["rcode"], "NOERROR");
        assert_eq!(v[side]["source"], "static");
        let answer = v[side]["answer"].as_array().unwrap();
        assert_eq!(answer.len(), 1, "{v}");
        assert!(
            answer[0]
                .as_str()
                .unwrap()
                .contains("server1.pbx.example.org.")
        );
        // RFC 2782: the target's address rides along in ADDITIONAL.
        assert!(
            v[side]["additional"].to_string().contains("192.0.2.10"),
            "{v}"
        );
    }
    assert!(v["decisions"].is_array());
    // Outside a SIP domain, no domain; the type defaults to A.
    let s2 = start().await;
    let v = api(&s2)
        .get("/api/v1/explain?name=server1.pbx.example.org")
        .await
        .json();
    assert_eq!(v["type"], "A");
    assert_eq!(v["domain"], Value::Null);
    assert!(v["after"]["answer"].to_string().contains("192.0.2.10"));
    // Bad parameters: 400 naming them.
    let r = c.get("/api/v1/explain?type=SRV").await;
    assert_status(&r, 400);
    assert_eq!(error_of(&r).1.as_deref(), Some("name"));
    let r = c
        .get("/api/v1/explain?name=pbx.example.org&type=BOGUS")
        .await;
    assert_status(&r, 400);
    assert_eq!(error_of(&r).1.as_deref(), Some("type"));
    let r = c.get("/api/v1/explain?name=bad..name").await;
    assert_status(&r, 400);
}

#[tokio::test]
async fn reload_reports_success_and_rejection() {
    let s = start().await;
    let c = api(&s);
    let file = zones_dir(&s).join("pbx.example.org.yaml");
    let r = c.send("POST", "/api/v1/reload", &[], None).await;
    assert_status(&r, 200);
    let v = r.json();
    assert_eq!(v["reloaded"], true);
    assert_eq!(v["status"]["last_error"], Value::Null);

    // A broken zone: 422 with the error; the running zone stays; /readyz reports it.
    std::fs::write(&file, PBX.replace("port: 5060", "port: many")).unwrap();
    let r = c.send("POST", "/api/v1/reload", &[], None).await;
    assert_status(&r, 422);
    let v = r.json();
    assert_eq!(v["reloaded"], false);
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("pbx.example.org.yaml"),
        "{v}"
    );
    assert!(v["status"]["last_error"].is_string());
    assert_eq!(
        dns(&s, "server1.pbx.example.org.", RecordType::A).await.1,
        vec!["192.0.2.10"]
    );
    let ready = Client::new(s.api.unwrap(), None).get("/readyz").await;
    assert_status(&ready, 200);
    assert_eq!(
        ready.json(),
        json!({"ready": true, "reason": "last_reload_failed"})
    );
    let status = c.get("/api/v1/status").await;
    assert!(
        status.json()["reload"]["last_error"]
            .as_str()
            .unwrap()
            .contains("port")
    );

    // Fixed: 200, and the new content is in force.
    std::fs::write(&file, PBX.replace("192.0.2.10", "192.0.2.11")).unwrap();
    let r = c.send("POST", "/api/v1/reload", &[], None).await;
    assert_status(&r, 200);
    assert_eq!(
        dns(&s, "server1.pbx.example.org.", RecordType::A).await.1,
        vec!["192.0.2.11"]
    );
}

#[tokio::test]
async fn api_writes_respect_the_operators_hand() {
    let s = start().await;
    let c = api(&s);
    let file = zones_dir(&s).join("pbx.example.org.yaml");
    let add = |name: &str, address: &str| json!({"name": name, "type": "A", "address": address});

    // A hand edit that the reload rejects: an API write is refused (409) naming the reload
    // error, and neither the file nor the pending error is touched.
    let broken = PBX.replace("port: 5060", "port: many");
    std::fs::write(&file, &broken).unwrap();
    assert_status(&c.send("POST", "/api/v1/reload", &[], None).await, 422);
    let path = "/api/v1/zones/pbx.example.org/records";
    let r = c
        .json("POST", path, &[], &add("server3", "192.0.2.30"))
        .await;
    assert_status(&r, 409);
    assert_eq!(error_of(&r).0, "conflict");
    let reason = r.json()["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("changed on disk"), "{reason}");
    assert!(reason.contains("the last reload failed"), "{reason}");
    assert!(
        reason.contains("port"),
        "the reload error is named: {reason}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), broken);
    let ready = Client::new(s.api.unwrap(), None).get("/readyz").await;
    assert_eq!(ready.json()["reason"], "last_reload_failed");
    assert!(c.get("/api/v1/status").await.json()["reload"]["last_error"].is_string());
    // A record delete and a zone delete are refused the same way.
    let doc = c.get("/api/v1/zones/pbx.example.org").await.json();
    let tag = etag(&c.get("/api/v1/zones/pbx.example.org").await);
    let index = index_of(&doc, "server1", "A");
    let r = c
        .delete(&format!("{path}/{index}"), &[("If-Match", &tag)])
        .await;
    assert_status(&r, 409);
    assert_status(&c.delete("/api/v1/zones/pbx.example.org", &[]).await, 409);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), broken);

    // Fixed by hand, with a comment, and reloaded: API writes go into the file's own text.
    let hand = PBX.replace(
        "records:\n",
        "records:\n  # the lab gateway, keep first\n  - { name: gw, type: A, address: 192.0.2.99 }\n",
    );
    std::fs::write(&file, &hand).unwrap();
    assert_status(&c.send("POST", "/api/v1/reload", &[], None).await, 200);
    let r = c
        .json("POST", path, &[], &add("server3", "192.0.2.30"))
        .await;
    assert_status(&r, 201);
    let written = std::fs::read_to_string(&file).unwrap();
    // Every line the operator wrote is still there, in order; the new record is one flow
    // line with its name relative as sent; the made-up SOA gains only its serial.
    let expected = hand.replace("ttl: 300\n", "ttl: 300\nsoa: { serial: 2 }\n")
        + "  - { name: server3, type: A, address: 192.0.2.30 }\n";
    assert_eq!(written, expected);
    assert_eq!(
        dns(&s, "server3.pbx.example.org.", RecordType::A).await.1,
        vec!["192.0.2.30"]
    );
    // A record delete removes its line only.
    let r = c.get("/api/v1/zones/pbx.example.org").await;
    let (doc, tag) = (r.json(), etag(&r));
    let index = index_of(&doc, "gw", "A");
    let r = c
        .delete(&format!("{path}/{index}"), &[("If-Match", &tag)])
        .await;
    assert_status(&r, 200);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        expected
            .replace("  - { name: gw, type: A, address: 192.0.2.99 }\n", "")
            .replace("serial: 2", "serial: 3")
    );
}

/// A stand-in for the prober.
#[derive(Default)]
struct FakeTargets {
    admin: Mutex<BTreeMap<String, AdminState>>,
    broken: bool,
}

impl TargetControl for FakeTargets {
    fn list(&self) -> Value {
        let admin = self.admin.lock().unwrap();
        Value::Array(
            admin
                .iter()
                .map(|(k, a)| {
                    json!({
                        "key": k, "host": "server1.pbx.example.org.", "domains": ["pbx.example.org."],
                        "health": "up", "admin": a, "last_code": 200, "rtt_ms": 1.5,
                        "since": 1_700_000_000u64, "transitions": 1, "last_reason": "2 good probes"
                    })
                })
                .collect(),
        )
    }

    fn set_admin(&self, key: &TargetKey, state: AdminState) -> Result<(), AdminError> {
        if self.broken {
            return Err(AdminError::Failed("cannot write the state file".into()));
        }
        let mut admin = self.admin.lock().unwrap();
        match admin.get_mut(&key.to_string()) {
            Some(a) => {
                *a = state;
                Ok(())
            }
            None => Err(AdminError::UnknownTarget(key.to_string())),
        }
    }
}

/// Serves a second API over `s`'s parts, with a fake prober and readiness switch.
async fn api_with_prober(
    s: &TestServer,
    targets: Arc<FakeTargets>,
    first_round: watch::Receiver<bool>,
) -> SocketAddr {
    let srv = s.server();
    let state = ApiState::new(
        srv.resolver.clone(),
        srv.reloader.clone(),
        srv.metrics.clone(),
        ApiToken::new(API_TOKEN),
    )
    .with_targets(targets)
    .with_readiness(first_round);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api::serve(listener, state, srv.shutdown.clone()));
    addr
}

#[tokio::test]
async fn readiness_waits_for_the_first_probe_round() {
    let s = start().await;
    let (tx, rx) = watch::channel(false);
    let addr = api_with_prober(&s, Arc::new(FakeTargets::default()), rx).await;
    let open = Client::new(addr, None);
    let r = open.get("/readyz").await;
    assert_status(&r, 503);
    assert_eq!(
        r.json(),
        json!({"ready": false, "reason": "first_probe_round_pending"})
    );
    let detail = Client::new(addr, Some(API_TOKEN));
    let v = detail.get("/api/v1/status").await.json();
    assert_eq!(v["ready"], false);
    assert_eq!(v["first_probe_round"], "pending");
    assert_eq!(v["config_loaded"], true);
    assert_status(&open.get("/livez").await, 200);
    tx.send(true).unwrap();
    let r = open.get("/readyz").await;
    assert_status(&r, 200);
    assert_eq!(r.json()["reason"], "ok");
    assert_eq!(
        detail.get("/api/v1/status").await.json()["first_probe_round"],
        "done"
    );
}

#[tokio::test]
async fn targets_are_listed_drained_and_enabled() {
    let s = start().await;
    let fake = Arc::new(FakeTargets::default());
    fake.admin
        .lock()
        .unwrap()
        .insert("192.0.2.10:5060/udp".into(), AdminState::Enabled);
    let (_tx, rx) = watch::channel(true);
    let c = Client::new(api_with_prober(&s, fake.clone(), rx).await, Some(API_TOKEN));

    let r = c.get("/api/v1/targets").await;
    assert_status(&r, 200);
    let v = r.json();
    let t = &v[0];
    for field in [
        "key",
        "health",
        "admin",
        "last_code",
        "rtt_ms",
        "since",
        "transitions",
    ] {
        assert!(!t[field].is_null(), "{field} missing in {t}");
    }
    let r = c
        .send(
            "POST",
            "/api/v1/targets/192.0.2.10:5060/udp/drain",
            &[],
            None,
        )
        .await;
    assert_status(&r, 200);
    assert_eq!(
        r.json(),
        json!({"target": "192.0.2.10:5060/udp", "admin": "drained"})
    );
    assert_eq!(c.get("/api/v1/targets").await.json()[0]["admin"], "drained");
    let r = c
        .send(
            "POST",
            "/api/v1/targets/192.0.2.10:5060/udp/enable",
            &[],
            None,
        )
        .await;
    assert_status(&r, 200);
    assert_eq!(c.get("/api/v1/targets").await.json()[0]["admin"], "enabled");
    // IPv6, percent-encoded brackets.
    let r = c
        .send(
            "POST",
            "/api/v1/targets/%5B2001:db8::10%5D:5061/tls/drain",
            &[],
            None,
        )
        .await;
    assert_status(&r, 404);
    assert!(r.text().contains("[2001:db8::10]:5061/tls"), "{}", r.text());
    // Unknown target 404, malformed 400.
    let r = c
        .send(
            "POST",
            "/api/v1/targets/192.0.2.99:5060/udp/drain",
            &[],
            None,
        )
        .await;
    assert_status(&r, 404);
    let r = c
        .send(
            "POST",
            "/api/v1/targets/192.0.2.10:5060/sctp/drain",
            &[],
            None,
        )
        .await;
    assert_status(&r, 400);
    assert_eq!(error_of(&r).1.as_deref(), Some("target"));
    let r = c
        .send("POST", "/api/v1/targets/server1:5060/udp/drain", &[], None)
        .await;
    assert_status(&r, 400);

    // A prober that cannot save the change: 500.
    let broken = Arc::new(FakeTargets {
        broken: true,
        ..FakeTargets::default()
    });
    let (_tx2, rx2) = watch::channel(true);
    let c2 = Client::new(api_with_prober(&s, broken, rx2).await, Some(API_TOKEN));
    let r = c2
        .send(
            "POST",
            "/api/v1/targets/192.0.2.10:5060/udp/drain",
            &[],
            None,
        )
        .await;
    assert_status(&r, 500);

    // The server's own API is connected to the real prober; the example zones only name
    // documentation addresses (RFC 5737/3849), which are never probed, so it lists none.
    let r = api(&s).get("/api/v1/targets").await;
    assert_status(&r, 200);
    assert_eq!(r.json(), json!([]));
}

#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let s = start().await;
    let c = api(&s);
    let r = c.get("/api/v1/openapi.json").await;
    assert_status(&r, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let shared = item.get("parameters").cloned().unwrap_or(json!([]));
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            documented.insert((method.to_uppercase(), path.clone()));
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}: no responses"
            );
            // Every {param} of the path is declared.
            let mut declared = Vec::new();
            for p in shared
                .as_array()
                .unwrap()
                .iter()
                .chain(op["parameters"].as_array().into_iter().flatten())
            {
                let p = match p.get("$ref").and_then(Value::as_str) {
                    Some(r) => doc["components"]["parameters"]
                        [r.trim_start_matches("#/components/parameters/")]
                    .clone(),
                    None => p.clone(),
                };
                assert!(p.is_object(), "{method} {path}: dangling parameter {p}");
                if p["in"] == "path" {
                    declared.push(p["name"].as_str().unwrap().to_owned());
                }
            }
            for seg in path.split('/') {
                if let Some(name) = seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                    assert!(
                        declared.iter().any(|d| d == name),
                        "{method} {path}: {name} undeclared"
                    );
                }
            }
            // Open routes say so; the rest fall under the global bearer requirement.
            let open = op.get("security") == Some(&json!([]));
            let route = api::table()
                .into_iter()
                .find(|r| r.method == method.to_uppercase() && r.path == path)
                .unwrap_or_else(|| panic!("{method} {path} is documented but not routed"));
            assert_eq!(open, route.access == Access::Open, "{method} {path}");
        }
    }
    // Every $ref resolves.
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/").skip(1) {
        let target = &part[..part.find('"').unwrap()];
        let mut node = &doc;
        for seg in target.split('/') {
            node = &node[seg];
        }
        assert!(!node.is_null(), "dangling $ref {target}");
    }

    // Every route in the router is documented, and answered by a handler (not the
    // router's 404 / 405).
    for route in api::table() {
        assert!(
            documented.contains(&(route.method.to_owned(), route.path.to_owned())),
            "{} {} is routed but not documented",
            route.method,
            route.path
        );
        let r = c
            .send(
                route.method,
                &concrete(route.path),
                &[("Content-Type", "application/json"), ("If-Match", "\"x\"")],
                Some(b"{}"),
            )
            .await;
        assert_ne!(r.status, 405, "{} {}", route.method, route.path);
        if r.status == 404 {
            assert_ne!(
                error_of(&r).0,
                "no_route",
                "{} {}",
                route.method,
                route.path
            );
        }
    }
    assert_eq!(documented.len(), api::table().len());
}
