use super::*;

#[test]
fn names_are_lowercase_fqdn() {
    let n = DomainName::parse("PBX.Example.ORG").unwrap();
    assert_eq!(n.as_str(), "pbx.example.org.");
    assert_eq!(DomainName::parse("pbx.example.org.").unwrap(), n);
    assert_eq!(
        DomainName::parse("_sip._udp.pbx.example.org")
            .unwrap()
            .as_str(),
        "_sip._udp.pbx.example.org."
    );
}

#[test]
fn prepend_joins_validates_and_lowercases() {
    let origin = DomainName::parse("Example.ORG").unwrap();
    assert_eq!(
        origin.prepend("_SIP._udp").unwrap().as_str(),
        "_sip._udp.example.org."
    );
    assert_eq!(origin.prepend("*").unwrap().as_str(), "*.example.org.");
    assert!(matches!(
        origin.prepend("ñ"),
        Err(NameError::BadChar(_, 'ñ'))
    ));
    assert!(matches!(
        origin.prepend("a..b"),
        Err(NameError::EmptyLabel(_))
    ));
    // Longer than a name may be, and longer than the stack buffer: an error either way.
    let long = vec!["x".repeat(60); 5].join(".");
    assert!(matches!(
        origin.prepend(&long),
        Err(NameError::NameTooLong(_))
    ));
    let longer = vec!["x".repeat(60); 9].join(".");
    assert!(matches!(
        origin.prepend(&longer),
        Err(NameError::NameTooLong(_))
    ));
    // The longest name there is (253 characters) fits.
    let max = format!("{}.y", vec!["x".repeat(62); 4].join("."));
    assert_eq!(DomainName::parse(&max).unwrap().as_str().len(), 254);
}

#[test]
fn bad_names_are_rejected_with_reason() {
    assert_eq!(DomainName::parse(""), Err(NameError::Empty));
    assert!(matches!(
        DomainName::parse("a..b"),
        Err(NameError::EmptyLabel(_))
    ));
    assert!(matches!(
        DomainName::parse("a b.org"),
        Err(NameError::BadChar(_, ' '))
    ));
    assert!(matches!(
        DomainName::parse(&"x".repeat(64)),
        Err(NameError::LabelTooLong(_))
    ));
    assert!(DomainName::parse("*.example.org").is_ok());
    assert!(DomainName::parse("a.*.example.org").is_err());
}

#[test]
fn containment_respects_label_boundaries() {
    let zone = DomainName::parse("example.org").unwrap();
    assert!(DomainName::parse("pbx.example.org").unwrap().is_in(&zone));
    assert!(zone.is_in(&zone));
    assert!(!DomainName::parse("badexample.org").unwrap().is_in(&zone));
    assert!(zone.is_in(&DomainName::root()));
    assert_eq!(
        DomainName::parse("a.example.org")
            .unwrap()
            .parent()
            .unwrap(),
        zone
    );
    assert_eq!(zone.label_count(), 2);
}

#[test]
fn rtype_names_round_trip() {
    assert_eq!("naptr".parse::<RType>().unwrap(), RType::NAPTR);
    assert_eq!("TYPE99".parse::<RType>().unwrap(), RType(99));
    assert_eq!(RType(99).to_string(), "TYPE99");
    assert_eq!(RType(99).metric_label(), "other");
    assert!("BOGUS".parse::<RType>().is_err());
}
