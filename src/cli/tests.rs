use super::*;

#[test]
fn targets_are_written_as_api_paths() {
    let p = |t| admin_path(t, "drain").map_err(|e| format!("{e:?}"));
    assert_eq!(
        p("192.0.2.10/udp").unwrap(),
        "/api/v1/targets/192.0.2.10:5060/udp/drain"
    );
    assert_eq!(
        p("192.0.2.10:5080/TCP").unwrap(),
        "/api/v1/targets/192.0.2.10:5080/tcp/drain"
    );
    assert_eq!(
        p("2001:db8::1/tls").unwrap(),
        "/api/v1/targets/%5B2001:db8::1%5D:5061/tls/drain"
    );
    assert_eq!(
        p("[2001:db8::1]:5070/udp").unwrap(),
        "/api/v1/targets/%5B2001:db8::1%5D:5070/udp/drain"
    );
    assert!(p("192.0.2.10").is_err());
    assert!(p("192.0.2.10:5060/sctp").is_err());
    assert!(p("server1:5060/udp").is_err());
}

#[test]
fn record_fields_keep_numbers_numeric() {
    let v = record_doc(
        "_sip._udp",
        "srv",
        &["priority=10".into(), "target=sip3".into()],
    )
    .unwrap();
    assert_eq!(
        v,
        json!({"name": "_sip._udp", "type": "SRV", "priority": 10, "target": "sip3"})
    );
    assert!(record_doc("a", "A", &["address".into()]).is_err());
}
