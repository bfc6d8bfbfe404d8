use std::{collections::BTreeMap, path::Path};

use super::*;

fn n(s: &str) -> DomainName {
    DomainName::parse(s).unwrap()
}

const YEALINK: &str = "\
zone: yealink.pbx.example.org
mode: fallback
ttl: 3600
records:
  # The seeds' static DNS cache Example 3 (NAPTR), Example 2 (SRV) and Example 1 (A),
  # with Yealink's own field names.
  - { name: '@', type: NAPTR, flags: S, order: 90, preference: 50, replace: _sip._tcp, service: SIP+D2T }
  - { name: '@', type: NAPTR, flags: S, order: 100, preference: 50, replace: _sip._udp, service: SIP+D2U }
  - { name: _sip._tcp, type: SRV, port: 5060, priority: 0, target: server1, weight: 1 }
  - { name: _sip._tcp, type: SRV, port: 5060, priority: 0, target: server2, weight: 2 }
  - { name: '@', type: A, ip: 192.0.2.13 }
  - { name: '@', type: A, ip: 192.0.2.14 }
  - { name: server1, type: A, ip: 192.0.2.13, ttl: 60 }
  - { name: alias, type: CNAME, target: server1 }
  - { name: '*.wild', type: TXT, text: hello }
";

fn yealink() -> Zone {
    load_yaml_text(Path::new("zones/y.yaml"), YEALINK).unwrap()
}

#[test]
fn yaml_zone_with_yealink_field_names_loads() {
    let z = yealink();
    assert_eq!(z.origin, n("yealink.pbx.example.org"));
    assert_eq!(z.mode, MergeMode::Fallback);
    assert_eq!(z.len(), 9);
    let ZoneAnswer::Records(naptr) = z.lookup(&z.origin, RType::NAPTR) else {
        panic!("no NAPTR")
    };
    assert_eq!(naptr.len(), 2);
    match &naptr[0].data {
        RecordData::Naptr {
            order,
            replacement,
            services,
            ..
        } => {
            assert_eq!(*order, 90);
            assert_eq!(replacement, &n("_sip._tcp.yealink.pbx.example.org"));
            assert_eq!(services, "SIP+D2T");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(naptr[0].ttl, 3600);
    let ZoneAnswer::Records(a) = z.lookup(&n("server1.yealink.pbx.example.org"), RType::A) else {
        panic!()
    };
    assert_eq!(a[0].ttl, 60);
}

#[test]
fn lookups_follow_rfc1034() {
    let z = yealink();
    // Existing name, other type: NODATA.
    assert_eq!(
        z.lookup(&n("server1.yealink.pbx.example.org"), RType::AAAA),
        ZoneAnswer::NoData
    );
    // Empty non-terminal: NODATA, not NXDOMAIN.
    assert_eq!(
        z.lookup(&n("_tcp.yealink.pbx.example.org"), RType::A),
        ZoneAnswer::NoData
    );
    // Absent: NXDOMAIN.
    assert_eq!(
        z.lookup(&n("nope.yealink.pbx.example.org"), RType::A),
        ZoneAnswer::NxDomain
    );
    // CNAME for other types, itself for CNAME.
    assert!(matches!(
        z.lookup(&n("alias.yealink.pbx.example.org"), RType::A),
        ZoneAnswer::Cname(_)
    ));
    assert!(matches!(
        z.lookup(&n("alias.yealink.pbx.example.org"), RType::CNAME),
        ZoneAnswer::Records(_)
    ));
    // Wildcard synthesis carries the query name.
    let q = n("x.wild.yealink.pbx.example.org");
    let ZoneAnswer::Records(w) = z.lookup(&q, RType::TXT) else {
        panic!()
    };
    assert_eq!(w[0].name, q);
    // SOA at the apex.
    assert!(matches!(
        z.lookup(&z.origin, RType::SOA),
        ZoneAnswer::Records(_)
    ));
    assert_eq!(z.negative_soa().ttl, 30);
}

#[test]
fn yaml_errors_name_file_line_and_field() {
    let text = "\
zone: pbx.example.org
records:
  - { name: '@', type: A, address: 192.0.2.1 }
  - name: _sip._udp
    type: SRV
    priority: 0
    target: server1
";
    let e = load_yaml_text(Path::new("zones/p.yaml"), text).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("zones/p.yaml:4"), "{msg}");
    assert!(msg.contains("records[1].port"), "{msg}");
    assert!(msg.contains("needs `port`"), "{msg}");

    for (bad, needle) in [
        (
            "zone: p.example.org\nrecords:\n  - { name: a, type: A, address: 2001:db8::1 }\n",
            "use type AAAA",
        ),
        (
            "zone: p.example.org\nrecords:\n  - { name: a, type: A, address: 192.0.2.1, port: 5 }\n",
            "`port` does not belong",
        ),
        (
            "zone: p.example.org\nrecords:\n  - { name: a, type: MX }\n",
            "not supported in YAML",
        ),
        (
            "zone: p.example.org\nrecords:\n  - { name: a.example.net., type: A, address: 192.0.2.1 }\n",
            "outside the zone",
        ),
        (
            "zone: p.example.org\nrecords:\n  - { name: a, type: A, adress: 192.0.2.1 }\n",
            "unknown field `adress`",
        ),
        (
            "zone: p.example.org\nrecords:\n  - { name: a, type: NAPTR, order: 1, service: SIP+D2U, flags: 's!', replacement: x }\n",
            "not A-Z",
        ),
        (
            "zone: p.example.org\nrecords:\n  - { name: a, type: CNAME, target: b }\n  - { name: a, type: A, address: 192.0.2.1 }\n",
            "has a CNAME",
        ),
    ] {
        let e = load_yaml_text(Path::new("z.yaml"), bad).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(needle), "{bad}\n=> {msg}");
        assert!(e.errors[0].line.is_some(), "{msg}");
    }
}

const ZONEFILE: &str = "\
$ORIGIN example.net.
$TTL 300
@   IN SOA ns1 hostmaster ( 1 3600 600 86400 30 )
ns1 IN A 192.0.2.53
gw  IN A 192.0.2.99
_sip._udp IN SRV 10 1 5060 gw
";

#[test]
fn zone_file_loads_through_hickory() {
    let z = load_zone_file_text(
        Path::new("zones/example.net.zone"),
        ZONEFILE,
        Some(n("example.net")),
        MergeMode::Merge,
    )
    .unwrap();
    assert_eq!(z.origin, n("example.net"));
    assert_eq!(z.mode, MergeMode::Merge);
    assert_eq!(z.format, ZoneFormat::ZoneFile);
    let ZoneAnswer::Records(srv) = z.lookup(&n("_sip._udp.example.net"), RType::SRV) else {
        panic!()
    };
    assert_eq!(
        srv[0].data,
        RecordData::Srv {
            priority: 10,
            weight: 1,
            port: 5060,
            target: n("gw.example.net")
        }
    );
}

#[test]
fn zone_file_error_names_its_line() {
    let bad = ZONEFILE.replace("gw  IN A 192.0.2.99", "gw  IN A 192.0.2.999");
    let e = load_zone_file_text(
        Path::new("zones/example.net.zone"),
        &bad,
        Some(n("example.net")),
        MergeMode::Override,
    )
    .unwrap_err();
    assert_eq!(e.errors[0].line, Some(5), "{e}");
    assert!(
        e.to_string().starts_with("zones/example.net.zone:5: "),
        "{e}"
    );

    // An error inside a multi-line entry is reported at the entry's first line.
    let bad = ZONEFILE.replace("( 1 3600", "( x 3600");
    let e = load_zone_file_text(
        Path::new("z.zone"),
        &bad,
        Some(n("example.net")),
        MergeMode::Override,
    )
    .unwrap_err();
    assert_eq!(e.errors[0].line, Some(3), "{e}");

    let no_soa = "$ORIGIN example.net.\n$TTL 300\ngw IN A 192.0.2.9\n";
    let e =
        load_zone_file_text(Path::new("z.zone"), no_soa, None, MergeMode::Override).unwrap_err();
    assert!(e.to_string().contains("no SOA"), "{e}");
}

#[test]
fn load_dir_collects_all_errors_and_rejects_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "zone: a.example.org\nrecords:\n  - { name: x, type: A }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.yaml"), "zone: b.example.org\n").unwrap();
    std::fs::write(dir.path().join("b2.yaml"), "zone: b.example.org\n").unwrap();
    std::fs::write(dir.path().join("README.txt"), "ignored").unwrap();
    let e = load_dir(dir.path(), &BTreeMap::new()).unwrap_err();
    assert_eq!(e.errors.len(), 2, "{e}");
    assert!(e.to_string().contains("a.yaml:3"), "{e}");
    assert!(e.to_string().contains("already defined"), "{e}");
}

#[test]
fn shipped_zones_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
    let mut modes = BTreeMap::new();
    modes.insert(n("example.net"), MergeMode::Merge);
    let store = load_dir(&dir, &modes).unwrap();
    let z = store.find(&n("server1.pbx.example.org")).unwrap();
    assert_eq!(z.origin, n("pbx.example.org"));
    assert!(store.find(&n("example.com")).is_none());
    assert_eq!(store.get(&n("example.net")).unwrap().mode, MergeMode::Merge);
}

#[test]
fn documents_round_trip() {
    let z = yealink();
    for r in z.records().iter().skip(1) {
        let d = schema::RecordDoc::from_rec(&z.origin, 3600, r).unwrap();
        let back = d.to_rec(&z.origin, 3600, "records[0]").unwrap();
        assert_eq!(&back, r);
    }
}

#[test]
fn a_reload_reuses_unchanged_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.example.org.zone");
    std::fs::write(
        &a,
        "zone: a.example.org\nrecords:\n  - { name: x, type: A, address: 192.0.2.1 }\n",
    )
    .unwrap();
    std::fs::write(
        &b,
        "$TTL 60\n@ IN SOA ns.b.example.org. h.b.example.org. 1 2 3 4 5\nx IN A 192.0.2.2\n",
    )
    .unwrap();
    let mut modes = BTreeMap::new();
    let first = load_dir(dir.path(), &modes).unwrap();
    let za = first.get(&n("a.example.org")).unwrap();
    let zb = first.get(&n("b.example.org")).unwrap();

    let same = load_dir_reusing(dir.path(), &modes, Some(&first)).unwrap();
    assert!(Arc::ptr_eq(za, same.get(&n("a.example.org")).unwrap()));
    assert!(Arc::ptr_eq(zb, same.get(&n("b.example.org")).unwrap()));

    // A changed file is parsed again; so is a .zone file whose merge mode changed.
    std::fs::write(
        &a,
        "zone: a.example.org\nrecords:\n  - { name: x, type: A, address: 192.0.2.9 }\n",
    )
    .unwrap();
    modes.insert(n("b.example.org"), MergeMode::Merge);
    let next = load_dir_reusing(dir.path(), &modes, Some(&same)).unwrap();
    let za2 = next.get(&n("a.example.org")).unwrap();
    assert!(!Arc::ptr_eq(za, za2));
    assert_eq!(za2.records_of(&n("x.a.example.org")).len(), 1);
    assert_eq!(
        next.get(&n("b.example.org")).unwrap().mode,
        MergeMode::Merge
    );

    // A zone replaced through the API is never mistaken for its file's old text.
    let edited = next.with_zone((**za).clone());
    std::fs::write(
        &a,
        "zone: a.example.org\nrecords:\n  - { name: x, type: A, address: 192.0.2.9 }\n",
    )
    .unwrap();
    let after = load_dir_reusing(dir.path(), &modes, Some(&edited)).unwrap();
    let za3 = after.get(&n("a.example.org")).unwrap();
    assert_eq!(
        za3.records_of(&n("x.a.example.org"))[0].data,
        RecordData::A("192.0.2.9".parse().unwrap())
    );
}

/// A zone large enough to be converted on every core (and read by the fast reader in
/// pieces) gives the records the full path gives, errors keep their record index, and
/// names below other names answer NODATA (empty non-terminals) without a scan.
#[test]
fn large_zones_load_in_parallel_like_small_ones() {
    let mut text = String::from("zone: big.example.org\nttl: 300\nrecords:\n");
    for i in 0..25_000 {
        text.push_str(&format!(
            "  - {{ name: h{i}.rack{}, type: A, address: 192.0.2.{} }}\n",
            i % 10,
            i % 250 + 1
        ));
    }
    let path = Path::new("zones/big.yaml");
    let zone = load_yaml_text(path, &text).unwrap();
    assert_eq!(zone.len(), 25_000);
    // The full YAML parser's way, which the fast reader must agree with.
    let doc: schema::ZoneDoc = yaml_serde::from_str(&text).unwrap();
    let expected = load::zone_from_doc(path, &text, doc).unwrap();
    assert_eq!(zone, expected);
    assert_eq!(
        zone.lookup(&n("h24999.rack9.big.example.org"), RType::A),
        ZoneAnswer::Records(vec![Rec::new(
            n("h24999.rack9.big.example.org"),
            300,
            RecordData::A("192.0.2.250".parse().unwrap())
        )])
    );
    assert_eq!(
        zone.lookup(&n("rack3.big.example.org"), RType::A),
        ZoneAnswer::NoData
    );
    assert_eq!(
        zone.lookup(&n("rack10.big.example.org"), RType::A),
        ZoneAnswer::NxDomain
    );
    // A bad record deep in the second half: the error names its index and line.
    let bad = text.replace(
        "  - { name: h20000.rack0, type: A, address: 192.0.2.1 }\n",
        "  - { name: h20000.rack0, type: A, address: 2001:db8::1 }\n",
    );
    assert_ne!(bad, text);
    let e = load_yaml_text(path, &bad).unwrap_err().to_string();
    assert!(e.contains("records[20000].address"), "{e}");
    assert!(e.contains("zones/big.yaml:20004"), "{e}");
}

#[test]
fn include_is_expanded_only_as_a_directive_inside_the_directory() {
    const HEAD: &str =
        "$ORIGIN example.net.\n$TTL 300\n@ IN SOA ns1 hostmaster ( 1 3600 600 86400 30 )\n";
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("zones");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(root.path().join("outside.inc"), "o IN A 192.0.2.9\n").unwrap();
    let modes = BTreeMap::new();
    let zone = dir.join("example.net.zone");
    let load = |text: &str| {
        std::fs::write(&zone, text).unwrap();
        load_dir(&dir, &modes)
    };
    // Nested includes inside the directory, relative to the including file; a comment may
    // mention $INCLUDE.
    std::fs::create_dir(dir.join("inc")).unwrap();
    std::fs::write(dir.join("inc/a.inc"), "a IN A 192.0.2.1\n$INCLUDE b.inc\n").unwrap();
    std::fs::write(dir.join("inc/b.inc"), "b IN A 192.0.2.2").unwrap();
    let store = load(&format!(
        "{HEAD}; $INCLUDE /etc/passwd is not read\n$INCLUDE inc/a.inc\nc IN A 192.0.2.3\n"
    ))
    .unwrap();
    assert_eq!(store.record_count(), 3);
    // Anything else is refused, naming the file and the line.
    for (text, line, what) in [
        (
            "$INCLUDE ../outside.inc\n",
            4,
            "outside the zones directory",
        ),
        ("x IN TXT \"$INCLUDE inc/a.inc\"\n", 4, "start of a line"),
        ("$INCLUDE inc/a.inc example.org.\n", 4, "domain name"),
        ("$INCLUDE\n", 4, "file name"),
        ("$INCLUDE inc/missing.inc\n", 4, "cannot read"),
    ] {
        let e = load(&format!("{HEAD}{text}")).unwrap_err().to_string();
        assert!(
            e.contains(&format!("example.net.zone:{line}")),
            "{text}: {e}"
        );
        assert!(e.contains(what), "{text}: {e}");
    }
    // An include loop ends at the depth limit.
    std::fs::write(dir.join("inc/loop.inc"), "$INCLUDE loop.inc\n").unwrap();
    let e = load(&format!("{HEAD}$INCLUDE inc/loop.inc\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nested deeper"), "{e}");
    // Text handed to the parser directly (not read from the directory) may not include.
    let e = load_zone_file_text(
        Path::new("z.zone"),
        &format!("{HEAD}$INCLUDE /etc/hostname\n"),
        None,
        MergeMode::Override,
    )
    .unwrap_err();
    assert!(e.to_string().contains("not allowed here"), "{e}");
}
