use super::*;

#[test]
fn table_names_are_checked_and_quoted_parts_kept() {
    let spec = SnowflakeSpec::parse("prod/DB.PUBLIC.ORDERS").unwrap();
    assert_eq!(spec.connection, "prod");
    assert_eq!(
        split_identifier("db.\"My Schema\".t_1").unwrap(),
        ["db", "\"My Schema\"", "t_1"]
    );
    for bad in [
        "prod",
        "/DB.S.T",
        "prod/DB.T",
        "prod/DB.S.T; DROP TABLE X",
        "prod/DB.S.\"T",
        "prod/DB.S.T--",
    ] {
        assert!(SnowflakeSpec::parse(bad).is_err(), "{bad} accepted");
    }
    assert_eq!(name_literal("\"o'k\""), "'o''k'");
    assert_eq!(name_literal("orders"), "'ORDERS'");
}

#[test]
fn upper_case_columns_become_lower_case_unless_they_collide() {
    let column = |name: &str| decode::ColumnType {
        name: name.into(),
        kind: "text".into(),
        precision: None,
        scale: None,
        nullable: true,
    };
    let columns = [
        column("ORDER_ID"),
        column("mixedCase"),
        column("X"),
        column("x"),
        column("N1"),
    ];
    assert_eq!(
        replica_names(&columns),
        ["order_id", "mixedCase", "X", "x", "n1"]
    );
}

#[test]
fn cursor_literals_keep_their_type() {
    assert_eq!(literal(&ScalarValue::Int64(Some(42))).unwrap(), "42");
    assert_eq!(
        literal(&ScalarValue::TimestampMicrosecond(
            Some(1_700_000_000_123_456),
            None
        ))
        .unwrap(),
        "'2023-11-14T22:13:20.123456'::TIMESTAMP_NTZ"
    );
    assert_eq!(
        literal(&ScalarValue::TimestampMicrosecond(
            Some(0),
            Some("UTC".into())
        ))
        .unwrap(),
        "'1970-01-01T00:00:00Z'::TIMESTAMP_TZ"
    );
    assert_eq!(
        literal(&ScalarValue::Utf8(Some("it's".into()))).unwrap(),
        "'it''s'"
    );
    assert_eq!(
        literal(&ScalarValue::Date32(Some(0))).unwrap(),
        "'1970-01-01'::DATE"
    );
}

#[test]
fn secrets_come_from_exactly_one_place() {
    let mut config = SnowflakeConfig {
        account: "a".into(),
        user: "u".into(),
        ..Default::default()
    };
    assert!(config.credentials("x").unwrap_err().contains("exactly one"));
    config.password_env = Some("AIRLOCK_TEST_SURELY_UNSET_VAR".into());
    let err = config.credentials("x").unwrap_err();
    assert!(
        err.contains("AIRLOCK_TEST_SURELY_UNSET_VAR is not set"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    std::fs::write(&path, "hunter2\n").unwrap();
    config.password_env = None;
    config.password_file = Some(path);
    let credentials = config.credentials("x").unwrap();
    assert!(matches!(credentials, Credentials::Password(ref p) if p == "hunter2"));
    assert!(!format!("{credentials:?}").contains("hunter2"));
}
