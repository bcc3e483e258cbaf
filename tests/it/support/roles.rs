//! A database set up the way docs/OPERATIONS.md says: empty, then `deploy/roles.sql` run by a
//! superuser with psql. Role names are cluster-wide and tests run in parallel, so each
//! database has roles of its own (`<tag>_<pid>_owner`, …), passed to roles.sql as variables;
//! `usage_reader` is one per cluster, as roles.sql makes it.

use std::process::Command;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use usage_worker::db;
use usage_worker::jobs::JobKind;

use super::{Out, binary, cluster, output, schedule_key};

/// In every URL of [`RolesDb::url_as`]: the cluster trusts local sockets and never checks it,
/// but it must never be written anywhere.
pub const PASSWORD: &str = "roles-pw-Hq4tW9";

pub struct RolesDb {
    pub dbname: String,
    pub schema: String,
    pub owner: String,
    pub worker: String,
    pub writer: String,
    /// A login role granted `usage_reader`, as an application's read-only role is.
    pub reader: String,
}

impl RolesDb {
    /// A fresh database with nothing of the worker's in it, and roles.sql applied for `schema`.
    pub fn new(tag: &str, schema: &str) -> RolesDb {
        let prefix = format!("{tag}_{}", std::process::id());
        let roles = RolesDb {
            dbname: format!("{prefix}_db"),
            schema: schema.to_string(),
            owner: format!("{prefix}_owner"),
            worker: format!("{prefix}_worker"),
            writer: format!("{prefix}_writer"),
            reader: format!("{prefix}_reader"),
        };
        db::connect(&cluster().url("postgres"))
            .expect("connect to test cluster")
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0",
                roles.dbname
            ))
            .expect("create database");
        roles.apply_roles_sql();
        roles
            .admin()
            .batch_execute(&format!(
                "CREATE ROLE {} LOGIN IN ROLE usage_reader",
                roles.reader
            ))
            .expect("create the reader's login role");
        roles
    }

    /// Runs deploy/roles.sql with psql as the superuser, as the runbook says.
    pub fn apply_roles_sql(&self) {
        let cluster = cluster();
        let out = Command::new(cluster.bin_dir.join("psql"))
            .args(["-X", "-q", "-U", "postgres", "-h"])
            .arg(&cluster.data_dir)
            .args(["-d", &self.dbname])
            .args(["-v", &format!("schema={}", self.schema)])
            .args(["-v", &format!("owner={}", self.owner)])
            .args(["-v", &format!("worker={}", self.worker)])
            .args(["-v", &format!("writer={}", self.writer)])
            .args([
                "-f",
                concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/roles.sql"),
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql -f deploy/roles.sql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The database's URL for `role`, with [`PASSWORD`] in it.
    pub fn url_as(&self, role: &str) -> String {
        cluster()
            .url(&self.dbname)
            .replacen("postgres@", &format!("{role}:{PASSWORD}@"), 1)
    }

    /// A superuser connection with the default search_path, as an application's admin has.
    pub fn admin(&self) -> PgConnection {
        db::connect(&cluster().url(&self.dbname)).expect("connect as superuser")
    }

    /// The binary as `role` on this database and schema, every schedule disabled.
    pub fn binary_as(&self, role: &str) -> Command {
        let mut command = binary();
        command
            .env("USAGE_WORKER__DATABASE__URL", self.url_as(role))
            .env("USAGE_WORKER__DATABASE__SCHEMA", &self.schema)
            .env("USAGE_WORKER__DATABASE__MIGRATE_ON_START", "false")
            .env("USAGE_WORKER__MAIL__TRANSPORT", "log");
        for kind in JobKind::ALL {
            command.env(schedule_key(*kind), "");
        }
        command
    }

    /// `--migrate` as the schema's owner, then roles.sql again for the new objects.
    pub fn migrate_as_owner(&self) {
        let mut command = self.binary_as(&self.owner);
        command.arg("--migrate");
        let out = output(command);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        self.apply_roles_sql();
    }

    /// Runs the binary as the daemon's role with `args`.
    pub fn run_as_worker(&self, args: &[&str]) -> Out {
        let mut command = self.binary_as(&self.worker);
        command.args(args);
        output(command)
    }
}

impl Drop for RolesDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = db::connect(&cluster().url("postgres")) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.dbname
            ));
            let _ = admin.batch_execute(&format!(
                "DROP ROLE IF EXISTS {}, {}, {}, {}",
                self.owner, self.worker, self.writer, self.reader
            ));
        }
    }
}

/// A query (`n`) counting what `role` owns in the current database: relations, functions,
/// schemas, types.
pub fn owned_by(role: &str) -> String {
    format!(
        "SELECT (SELECT count(*) FROM pg_class WHERE relowner = '{role}'::regrole)
              + (SELECT count(*) FROM pg_proc WHERE proowner = '{role}'::regrole)
              + (SELECT count(*) FROM pg_namespace WHERE nspowner = '{role}'::regrole)
              + (SELECT count(*) FROM pg_type WHERE typowner = '{role}'::regrole) AS n"
    )
}

/// A query (`n`) counting the schemas `role` may create objects in, plus one when it may
/// create schemas in the current database.
pub fn creatable_by(role: &str) -> String {
    format!(
        "SELECT (SELECT count(*) FROM pg_namespace WHERE has_schema_privilege('{role}', oid, 'CREATE'))
              + has_database_privilege('{role}', current_database(), 'CREATE')::int AS n"
    )
}
