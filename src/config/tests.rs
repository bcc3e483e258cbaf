//! In-process checks of loading and validation: each bad value is refused naming its key.

use secrecy::ExposeSecret;

use crate::job_kind::JobKind;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Settings from the environment alone, with a database URL (as the binary's tests give).
fn load_env(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let mut vars = env(&[(
        "USAGE_WORKER__DATABASE__URL",
        "postgres://worker@127.0.0.1/app",
    )]);
    vars.extend(env(pairs));
    Settings::load_with_env(None, vars)
}

fn load_toml(text: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    Settings::load_with_env(Some(&path), Vec::new())
}

/// The key that refusing the configuration file `text` names; anything else (what the binary
/// would not exit 78 for with a named key) fails the test, quoting the file.
fn refused_key(text: &str) -> String {
    match load_toml(text) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("{text:?}: expected a refused key, got {other:?}"),
    }
}

/// The key a load refused.
fn key_refused_by(result: Result<Settings, ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected a refused key, got {other:?}"),
    }
}

/// A wrong value of each section's keys (environment form, value) and the key it must name.
const WRONG_VALUES: &[(&str, &str, &str)] = &[
    ("DATABASE__POOL_SIZE", "0", "database.pool_size"),
    ("DATABASE__POOL_SIZE", "-3", "database.pool_size"),
    ("DATABASE__POOL_SIZE", "many", "database.pool_size"),
    (
        "DATABASE__CONNECT_TIMEOUT",
        "soon",
        "database.connect_timeout",
    ),
    (
        "DATABASE__MIGRATE_ON_START",
        "perhaps",
        "database.migrate_on_start",
    ),
    (
        "JOBS__ALERTS__SCHEDULE",
        "every day",
        "jobs.alerts.schedule",
    ),
    ("JOBS__RETENTION__TIMEOUT", "-1h", "jobs.retention.timeout"),
    ("JOBS__RETENTION__TIMEOUT", "0s", "jobs.retention.timeout"),
    (
        "SCHEDULER__CATCH_UP_HORIZON",
        "a week",
        "scheduler.catch_up_horizon",
    ),
    (
        "SCHEDULER__SHUTDOWN_GRACE",
        "30 fortnights",
        "scheduler.shutdown_grace",
    ),
    ("LOG__LEVEL", "usage_worker=loudest", "log.level"),
    ("LOG__FORMAT", "xml", "log.format"),
    (
        "PARTITIONS__MONTHS_AHEAD",
        "many",
        "partitions.months_ahead",
    ),
    ("PARTITIONS__MONTHS_AHEAD", "121", "partitions.months_ahead"),
    ("RETENTION__EVENTS_MONTHS", "0", "retention.events_months"),
    ("RETENTION__JOB_RUNS_DAYS", "0", "retention.job_runs_days"),
    ("RETENTION__BATCH_SIZE", "0", "retention.batch_size"),
    (
        "RETENTION__LOCK_TIMEOUT",
        "5 parsecs",
        "retention.lock_timeout",
    ),
    ("AGGREGATE__BATCH_EVENTS", "0", "aggregate.batch_events"),
    ("AGGREGATE__STALL_WARNING", "0s", "aggregate.stall_warning"),
    ("INGEST__IDEMPOTENCY_DAYS", "0", "ingest.idempotency_days"),
    (
        "INGEST__IDEMPOTENCY_DAYS",
        "3651",
        "ingest.idempotency_days",
    ),
    ("INGEST__IDEMPOTENCY_DAYS", "-1", "ingest.idempotency_days"),
    (
        "INGEST__IDEMPOTENCY_DAYS",
        "a week",
        "ingest.idempotency_days",
    ),
    ("METRICS__LISTEN", "not a socket", "metrics.listen"),
    ("MAIL__TRANSPORT", "pigeon", "mail.transport"),
    ("MAIL__FROM", "nobody at all", "mail.from"),
    (
        "MAIL__UPGRADE_URL",
        "example.com/billing",
        "mail.upgrade_url",
    ),
    ("MAIL__SMTP__PORT", "70000", "mail.smtp.port"),
    ("MAIL__SMTP__TLS", "maybe", "mail.smtp.tls"),
    ("MAIL__SMTP__POOL_SIZE", "0", "mail.smtp.pool_size"),
    ("ALERTS__THRESHOLDS", "[80, 180]", "alerts.thresholds"),
    ("ALERTS__MAX_ATTEMPTS", "0", "alerts.max_attempts"),
    ("ALERTS__BACKOFF_BASE", "fast", "alerts.backoff_base"),
    ("ALERTS__BACKOFF_MAX", "1s", "alerts.backoff_max"),
    ("ALERTS__BATCH_SIZE", "0", "alerts.batch_size"),
];

#[test]
fn a_wrong_type_or_value_in_any_section_is_refused_naming_the_key() {
    let mut failures = Vec::new();
    for (key, value, named) in WRONG_VALUES {
        let result = load_env(&[(&format!("USAGE_WORKER__{key}"), value)]);
        match result {
            Err(ConfigError::Invalid { key: got, .. }) if got == *named => {}
            other => failures.push(format!("{key}={value}: expected {named}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_schema_name_must_be_a_plain_identifier_of_the_workers_own() {
    for bad in [
        "public",
        "pg_usage",
        "information_schema",
        "Usage",
        "usage-books",
        "1usage",
        "",
        "usage; DROP SCHEMA public",
        &"u".repeat(64),
    ] {
        let result = load_env(&[("USAGE_WORKER__DATABASE__SCHEMA", bad)]);
        assert_eq!(key_refused_by(result), "database.schema", "{bad:?}");
    }
    for good in ["usage", "metering", "_books", "usage_2", &"u".repeat(63)] {
        let settings = load_env(&[("USAGE_WORKER__DATABASE__SCHEMA", good)]).unwrap();
        assert_eq!(settings.database.schema.as_str(), good);
    }
    assert_eq!(Settings::default().database.schema.as_str(), "usage");
    let error = load_toml("[database]\nschema = \"public\"\n").unwrap_err();
    assert!(
        error.to_string().contains("`database.schema`")
            && error
                .to_string()
                .contains("belongs to PostgreSQL or to the application"),
        "{error}"
    );
}

#[test]
fn the_error_text_names_the_key_and_the_expected_form() {
    let error = load_env(&[("USAGE_WORKER__DATABASE__POOL_SIZE", "0")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "configuration key `database.pool_size`: 0 is out of range; expected 1 to 200"
    );
    let error = load_env(&[("USAGE_WORKER__RETENTION__EVENTS_MONTHS", "0")]).unwrap_err();
    assert!(
        error.to_string().contains("expected a number of months"),
        "{error}"
    );
    let error = load_env(&[("USAGE_WORKER__DATABASE__POOL_SIZE", "many")]).unwrap_err();
    assert!(error.to_string().contains("got string \"many\""), "{error}");
}

#[test]
fn a_misspelled_key_or_section_in_the_file_is_named_with_its_path() {
    assert_eq!(
        refused_key("[database]\npool_sise = 4\n"),
        "database.pool_sise"
    );
    assert_eq!(
        refused_key("[jobs.partitions]\nschedul = \"0 2 * * *\"\n"),
        "jobs.partitions.schedul"
    );
    assert_eq!(refused_key("[databse]\nurl = \"\"\n"), "databse");
    let error = load_toml("[mail.smtp]\nhots = \"x\"\n").unwrap_err();
    assert!(error.to_string().contains("unknown key"), "{error}");
}

#[test]
fn a_bad_cron_string_or_an_unknown_job_is_named() {
    let error = load_toml("[jobs.partitions]\nschedule = \"61 * * * *\"\n").unwrap_err();
    assert!(
        error.to_string().contains("jobs.partitions.schedule"),
        "{error}"
    );
    assert_eq!(
        refused_key("[jobs.agregate]\nschedule = \"* * * * *\"\n"),
        "jobs.agregate"
    );
}

#[test]
fn a_threshold_out_of_range_in_a_list_names_the_list() {
    let error = load_toml("[alerts]\nthresholds = [80, 120]\n").unwrap_err();
    assert!(
        matches!(&error, ConfigError::Invalid { key, message }
            if key == "alerts.thresholds" && message.contains("120")),
        "{error}"
    );
    assert_eq!(
        refused_key("[alerts]\nthresholds = [80, 80]\n"),
        "alerts.thresholds"
    );
    assert_eq!(
        refused_key("[alerts]\nthresholds = []\n"),
        "alerts.thresholds"
    );
}

#[test]
fn the_credit_low_percentage_is_one_to_ninety_nine_and_defaults_to_twenty() {
    for text in ["credit_low_percent = 100", "credit_low_percent = 0"] {
        assert_eq!(
            refused_key(&format!("[alerts]\n{text}\n")),
            "alerts.credit_low_percent",
            "{text}"
        );
    }
    let settings = load_toml("[alerts]\ncredit_low_percent = 10\n").unwrap();
    assert_eq!(settings.alerts.credit_low_percent.get(), 10);
    assert_eq!(load_toml("").unwrap().alerts.credit_low_percent.get(), 20);
}

#[test]
fn forecasts_are_off_by_default_and_take_one_hour_to_a_year() {
    assert_eq!(load_toml("").unwrap().alerts.forecast_seconds(), None);
    for text in ["forecast_hours = 0", "forecast_hours = 9000"] {
        assert_eq!(
            refused_key(&format!("[alerts]\n{text}\n")),
            "alerts.forecast_hours"
        );
    }
    let settings = load_toml("[alerts]\nforecast_hours = 72\n").unwrap();
    assert_eq!(settings.alerts.forecast_seconds(), Some(259_200.0));
}

#[test]
fn an_unsubscribe_url_must_be_https_with_a_host_and_comes_with_a_long_secret() {
    let secret = "unsubscribe_secret = \"0123456789abcdef0123456789abcdef\"";
    for url in [
        "http://example.com/u",
        "https:///u",
        "https://?token=1",
        "example.com/u",
        "",
    ] {
        assert_eq!(
            refused_key(&format!("[mail]\nunsubscribe_url = \"{url}\"\n{secret}\n")),
            "mail.unsubscribe_url",
            "{url}"
        );
    }
    let url = "unsubscribe_url = \"https://example.com/u\"";
    assert_eq!(
        refused_key(&format!("[mail]\n{url}\n")),
        "mail.unsubscribe_secret"
    );
    assert_eq!(
        refused_key(&format!("[mail]\n{url}\nunsubscribe_secret = \"short\"\n")),
        "mail.unsubscribe_secret"
    );
    let settings = load_toml(&format!("[mail]\n{url}\n{secret}\n")).unwrap();
    let printed = settings.to_redacted_toml();
    assert!(!printed.contains("0123456789abcdef"), "{printed}");
    assert!(!format!("{settings:?}").contains("0123456789abcdef"));
}

#[test]
fn a_file_that_is_not_toml_is_a_file_error() {
    assert!(matches!(
        load_toml("[database\n"),
        Err(ConfigError::File { .. })
    ));
    assert!(matches!(
        Settings::load_with_env(
            Some(Path::new("/nonexistent/usage-worker.toml")),
            Vec::new()
        ),
        Err(ConfigError::File { .. })
    ));
}

#[test]
fn environment_strings_are_taken_verbatim() {
    let settings = load_env(&[
        ("USAGE_WORKER__DATABASE__PASSWORD", "0123"),
        ("USAGE_WORKER__MAIL__SMTP__USERNAME", "1e5"),
        ("USAGE_WORKER__MAIL__SMTP__PASSWORD", "true"),
        ("USAGE_WORKER__LOG__LEVEL", "debug"),
    ])
    .unwrap();
    let password = settings.database_password().unwrap().unwrap();
    assert_eq!(password.expose_secret(), "0123");
    assert_eq!(settings.mail.smtp.username.as_deref(), Some("1e5"));
    let smtp = settings.mail.smtp.password().unwrap().unwrap();
    assert_eq!(smtp.expose_secret(), "true");
}

#[test]
fn numeric_and_boolean_keys_still_read_from_the_environment() {
    let settings = load_env(&[
        ("USAGE_WORKER__DATABASE__POOL_SIZE", "12"),
        ("USAGE_WORKER__DATABASE__MIGRATE_ON_START", "false"),
        ("USAGE_WORKER__MAIL__SMTP__PORT", "2525"),
        ("USAGE_WORKER__RETENTION__EVENTS_MONTHS", "36"),
        ("USAGE_WORKER__AGGREGATE__BATCH_EVENTS", "5000"),
        ("USAGE_WORKER__SCHEDULER__SHUTDOWN_GRACE", "45"),
    ])
    .unwrap();
    assert_eq!(settings.database.pool_size, 12);
    assert!(!settings.database.migrate_on_start);
    assert_eq!(settings.mail.smtp.effective_port(), 2525);
    assert_eq!(settings.retention.events_months.get(), 36);
    assert_eq!(settings.aggregate.batch_events, 5000);
    assert_eq!(settings.scheduler.shutdown_grace.0.as_secs(), 45);
}

#[test]
fn database_url_is_overridden_by_the_prefixed_variable() {
    let settings = Settings::load_with_env(
        None,
        env(&[
            ("DATABASE_URL", "postgres://a@one/app"),
            ("USAGE_WORKER__DATABASE__URL", "postgres://b@two/app"),
        ]),
    )
    .unwrap();
    assert_eq!(settings.database.url, "postgres://b@two/app");
    let settings =
        Settings::load_with_env(None, env(&[("DATABASE_URL", "postgres://a@one/app")])).unwrap();
    assert_eq!(settings.database.url, "postgres://a@one/app");
}

#[test]
fn durations_read_units_and_bare_seconds_and_print_in_whole_units() {
    for (text, secs) in [("30s", 30), ("15m", 900), ("2h", 7_200), ("7d", 604_800)] {
        assert_eq!(
            HumanDuration::parse(text).unwrap().0.as_secs(),
            secs,
            "{text}"
        );
    }
    assert_eq!(HumanDuration::parse("90").unwrap().0.as_secs(), 90);
    assert_eq!(HumanDuration::parse("1h 30m").unwrap().to_string(), "90m");
    assert_eq!(HumanDuration::parse("7d").unwrap().to_string(), "7d");
    assert!(HumanDuration::parse("-1h").is_err());
    assert!(HumanDuration::parse("soon").is_err());
}

#[test]
fn the_defaults_are_valid_and_the_printed_configuration_hides_secrets() {
    let settings = load_env(&[
        ("USAGE_WORKER__DATABASE__URL", "postgres://w:db-pw-x@db/app"),
        ("USAGE_WORKER__MAIL__SMTP__USERNAME", "mailer"),
        ("USAGE_WORKER__MAIL__SMTP__PASSWORD", "smtp-pw-y"),
    ])
    .unwrap();
    let printed = settings.to_redacted_toml();
    assert!(
        !printed.contains("db-pw-x") && !printed.contains("smtp-pw-y"),
        "{printed}"
    );
    assert!(printed.contains("postgres://w:***@db/app"), "{printed}");
    assert!(
        printed.contains("thresholds = [\n    80,\n    95,\n]"),
        "{printed}"
    );
    let debug = format!("{settings:?}");
    assert!(!debug.contains("db-pw-x") && !debug.contains("smtp-pw-y"));
}

#[test]
fn a_key_value_database_url_is_printed_and_debugged_without_its_password() {
    let url = r"host = db.internal port=5432 password = 'kv pw\'x' dbname=usage";
    let settings = load_env(&[("USAGE_WORKER__DATABASE__URL", url)]).unwrap();
    let printed = settings.to_redacted_toml();
    let debug = format!("{settings:?}");
    for output in [&printed, &debug] {
        assert!(!output.contains("kv pw"), "{output}");
        assert!(
            output.contains("host=db.internal port=5432 password=*** dbname=usage"),
            "{output}"
        );
    }
}

#[test]
fn a_key_value_database_url_libpq_could_not_read_is_refused_without_quoting_it() {
    for url in ["host=db password='kv-pw", "host=db password=kv pw"] {
        let error = load_env(&[("USAGE_WORKER__DATABASE__URL", url)]).unwrap_err();
        let text = error.to_string();
        assert!(!text.contains("kv"), "{text}");
        assert_eq!(key_refused_by(Err(error)), "database.url");
    }
}

#[test]
fn a_job_is_configured_under_its_name_in_either_spelling_and_the_environment_overrides_both() {
    let url = "[database]\nurl = \"postgres://worker@127.0.0.1/app\"\n";
    for table in ["reset-daily", "reset_daily"] {
        let settings = load_toml(&format!("{url}[jobs.{table}]\nschedule = \"5 * * * *\"\n"))
            .unwrap_or_else(|e| panic!("[jobs.{table}]: {e}"));
        let plan = settings.job_plan(JobKind::ResetDaily).unwrap();
        assert_eq!(
            plan.schedule.unwrap().source(),
            "5 * * * *",
            "[jobs.{table}]"
        );
    }
    assert_eq!(
        refused_key(&format!(
            "{url}[jobs.reset-daily]\nschedule = \"5 * * * *\"\n[jobs.reset_daily]\ntimeout = \"1m\"\n"
        )),
        "jobs.reset-daily"
    );
    // The environment spells it with `_` and wins over the file's `[jobs.reset-daily]`.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!("{url}[jobs.reset-daily]\nschedule = \"5 * * * *\"\n"),
    )
    .unwrap();
    let settings = Settings::load_with_env(
        Some(&path),
        env(&[("USAGE_WORKER__JOBS__RESET_DAILY__SCHEDULE", "7 * * * *")]),
    )
    .unwrap();
    let plan = settings.job_plan(JobKind::ResetDaily).unwrap();
    assert_eq!(plan.schedule.unwrap().source(), "7 * * * *");
    // --check-config shows the one documented spelling.
    assert!(settings.to_redacted_toml().contains("[jobs.reset-daily]"));
    assert_eq!(JobKind::from_name("reset_daily"), Some(JobKind::ResetDaily));
    assert_eq!(
        JobKind::parse_list("reset_monthly,reset-daily"),
        Ok(vec![JobKind::ResetMonthly, JobKind::ResetDaily])
    );
}
