//! usage-worker: keeps the usage and quota books of a SaaS product in PostgreSQL.
//!
//! Applications write one row per usage event; this daemon does the scheduled work that
//! must happen later and exactly once. See `README.md` and `docs/`.
//!
//! # Layers
//!
//! Modules are layered, bottom to top; a module imports only modules of its own layer or
//! below, never one above (a test below enforces it):
//!
//! 1. `job_kind`, `subject`, `conninfo`, `redact`, `format`, `schedule`, `embedded_pg`: job
//!    identity, whose books (`Subject`) and leaf helpers
//! 2. `config`: settings, parsing and validation only
//! 3. `logging`
//! 4. `db`
//! 5. `mail`
//! 6. `jobs`, `quota_report`, `export`, `demo`
//! 7. `ledger`, `scheduler`: the run ledger, runner, daemon loop and catch-up
//! 8. `notify`, `metrics`, `service`
//! 9. `cli`, `app`: start-up checks that need several layers (templates), and dispatch

pub mod app;
pub mod cli;
pub mod config;
pub mod conninfo;
pub mod db;
pub mod demo;
pub mod embedded_pg;
pub mod export;
pub mod format;
pub mod job_kind;
pub mod jobs;
pub mod ledger;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod notify;
pub mod quota_report;
pub mod redact;
pub mod schedule;
pub mod scheduler;
pub mod service;
pub mod subject;

#[cfg(test)]
mod layer_tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    /// The layer order of the module documentation above, bottom first.
    const LAYERS: &[&[&str]] = &[
        &[
            "job_kind",
            "subject",
            "conninfo",
            "redact",
            "format",
            "schedule",
            "embedded_pg",
        ],
        &["config"],
        &["logging"],
        &["db"],
        &["mail"],
        &["jobs", "quota_report", "export", "demo"],
        &["ledger", "scheduler"],
        &["notify", "metrics", "service"],
        &["cli", "app"],
    ];

    fn layer_of(module: &str) -> Option<usize> {
        LAYERS.iter().position(|layer| layer.contains(&module))
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The source without `#[cfg(test)]` items, and the files those items declare
    /// (`#[cfg(test)] mod tests;`), which are test code too.
    fn without_test_code(text: &str) -> (String, Vec<String>) {
        let mut kept = String::new();
        let mut test_files = Vec::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line.trim() != "#[cfg(test)]" {
                kept.push_str(line);
                kept.push('\n');
                continue;
            }
            let indent = &line[..line.len() - line.trim_start().len()];
            let Some(item) = lines.next() else { break };
            if let Some(name) = item
                .trim()
                .strip_prefix("mod ")
                .and_then(|rest| rest.strip_suffix(';'))
            {
                test_files.push(name.to_string());
            } else if !item.trim_end().ends_with(';') {
                let end = format!("{indent}}}");
                lines.by_ref().find(|l| *l == end);
            }
        }
        (kept, test_files)
    }

    /// The top-level modules a source names through `crate::x` or `crate::{x, y}`.
    fn imported_modules(code: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let names = match rest.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or_default(),
                    None => rest,
                };
                for name in names.split(',') {
                    let name: String = name
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                }
            }
        }
        found
    }

    #[test]
    fn no_module_imports_a_module_of_a_higher_layer() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut test_only = BTreeSet::new();
        let mut sources = Vec::new();
        for path in files {
            let (code, tests) = without_test_code(&std::fs::read_to_string(&path).unwrap());
            let dir = path.parent().unwrap().to_path_buf();
            test_only.extend(tests.iter().map(|t| dir.join(format!("{t}.rs"))));
            test_only.extend(tests.iter().map(|t| dir.join(t).join("mod.rs")));
            sources.push((path, code));
        }
        let mut violations = Vec::new();
        for (path, code) in sources.iter().filter(|(p, _)| !test_only.contains(p)) {
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = first.to_str().unwrap().trim_end_matches(".rs");
            if module == "lib" || module == "main" {
                continue;
            }
            let own = layer_of(module)
                .unwrap_or_else(|| panic!("module `{module}` is missing from LAYERS"));
            for import in imported_modules(code) {
                match layer_of(&import) {
                    Some(layer) if layer > own => violations.push(format!(
                        "{} (layer {}) imports `{import}` (layer {})",
                        relative.display(),
                        own + 1,
                        layer + 1
                    )),
                    _ => {}
                }
            }
        }
        assert!(violations.is_empty(), "{}", violations.join("\n"));
    }

    #[test]
    fn the_scanner_sees_grouped_imports_and_skips_test_modules() {
        let code = "use crate::{db, mail::Mailer};\n// crate::app in a comment\n\
                    #[cfg(test)]\nmod tests {\n    use crate::app;\n}\n#[cfg(test)]\nmod more;\n";
        let (kept, test_files) = without_test_code(code);
        assert_eq!(test_files, ["more"]);
        let imports: Vec<String> = imported_modules(&kept).into_iter().collect();
        assert_eq!(imports, ["db", "mail"]);
    }
}
