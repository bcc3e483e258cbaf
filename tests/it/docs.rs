//! The documentation and the example configuration agree with the code.
use usage_worker::config::Settings;
use usage_worker::jobs::JobKind;

fn read(path: &str) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_readme_lists_every_job_with_its_default_schedule() {
    let readme = read("README.md");
    for kind in JobKind::ALL {
        let row = format!("| `{}` |", kind.name());
        let line = readme
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("README.md has no row for job {}", kind.name()));
        assert!(
            line.contains(&format!("`{}`", kind.defaults().schedule)),
            "README.md gives job {} a schedule other than {}",
            kind.name(),
            kind.defaults().schedule
        );
    }
}

#[test]
fn the_example_config_is_valid_and_states_the_default_schedules() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config.example.toml");
    let settings = Settings::load_with_env(Some(std::path::Path::new(path)), Vec::new())
        .unwrap_or_else(|e| panic!("deploy/config.example.toml: {e}"));
    for plan in settings.job_plans().unwrap() {
        let kind = plan.kind;
        assert!(
            settings.jobs.contains_key(kind.config_key()),
            "deploy/config.example.toml has no [jobs.{}]",
            kind.config_key()
        );
        assert_eq!(
            plan.schedule.as_ref().map(|s| s.source().to_string()),
            Some(kind.defaults().schedule.to_string()),
            "[jobs.{}] schedule differs from the default",
            kind.config_key()
        );
        assert_eq!(plan.timeout, kind.defaults().timeout);
    }
}

/// The test modules, by file name (`crash.rs`), with their source.
fn test_sources() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it");
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

#[test]
fn every_test_named_in_reliability_md_exists() {
    let doc = read("docs/RELIABILITY.md");
    let sources = test_sources();
    let mut named = 0;
    for quoted in doc.split('`').skip(1).step_by(2) {
        // `file.rs: test_name` or a bare `test_name`; abbreviated names (…) are skipped.
        let (file, name) = match quoted.split_once(": ") {
            Some((file, name)) => (Some(file), name),
            None => (None, quoted),
        };
        let is_test_name = name.matches('_').count() >= 3
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !is_test_name {
            continue;
        }
        named += 1;
        let defines = |source: &String| source.contains(&format!("fn {name}("));
        match file {
            Some(file) => {
                let (_, source) = sources.iter().find(|(f, _)| f == file).unwrap_or_else(|| {
                    panic!("docs/RELIABILITY.md names tests/it/{file}, which does not exist")
                });
                assert!(
                    defines(source),
                    "docs/RELIABILITY.md names {name} in {file}, which has no such function"
                );
            }
            None => assert!(
                sources.iter().any(|(_, source)| defines(source)),
                "docs/RELIABILITY.md names {name}, which is no function in tests/it/"
            ),
        }
    }
    assert!(
        named >= 30,
        "only {named} tests named in docs/RELIABILITY.md"
    );
}
