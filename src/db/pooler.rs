//! Refusing a connection pooler in transaction mode (PgBouncer's `pool_mode = transaction`,
//! Supavisor's or Supabase's port 6543, the "pooled" URLs of Heroku and Neon).
//!
//! The daemon keeps state in its sessions: each running job's advisory lock, the
//! `search_path` that makes its SQL resolve in its own schema and nowhere else, and diesel's
//! prepared statements. Behind a transaction-mode pooler, consecutive transactions of one
//! client run on whichever server session is free, so all of that is lost or, worse, handed
//! to another client. The daemon therefore checks, before it does anything else, that the
//! session it talks to stays its own, and refuses to start otherwise. Applications may keep
//! using a transaction-mode URL: the functions they call need no session state.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Text};

use super::DbError;

/// A setting of this program's own namespace, set in one transaction and read in the next.
const PROBE_SETTING: &str = "usage_worker.session_probe";

#[derive(QueryableByName)]
struct Session {
    #[diesel(sql_type = Integer)]
    pid: i32,
    #[diesel(sql_type = Nullable<Text>)]
    probe: Option<String>,
}

fn session(conn: &mut PgConnection) -> QueryResult<Session> {
    diesel::sql_query(format!(
        "SELECT pg_backend_pid() AS pid, current_setting('{PROBE_SETTING}', true) AS probe"
    ))
    .get_result(conn)
}

fn set_probe(conn: &mut PgConnection, value: &str) -> QueryResult<()> {
    // The value is made here of digits and letters only.
    conn.batch_execute(&format!("SET {PROBE_SETTING} = '{value}'"))
}

/// Opens two sessions to `url` and checks that each keeps its server process and a setting
/// from one transaction to the next, and that the two do not share a server process.
/// Behind a transaction-mode pooler one of these fails (with a pool of one server
/// connection, all of them do); directly, or in a pooler's session mode, none does.
pub fn refuse_transaction_pooler(url: &str) -> Result<(), DbError> {
    let token = format!(
        "p{}x{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let mut a = super::connect(url)?;
    set_probe(&mut a, &format!("{token}a"))?;
    let first = session(&mut a)?;
    let mut b = super::connect(url)?;
    set_probe(&mut b, &format!("{token}b"))?;
    let other = session(&mut b)?;
    let again = session(&mut a)?;
    let evidence = if other.pid == first.pid {
        Some(format!(
            "two connections were served by one server process, pid {}",
            first.pid
        ))
    } else if again.pid != first.pid {
        Some(format!(
            "one connection moved from server process {} to {} between two transactions",
            first.pid, again.pid
        ))
    } else if again.probe.as_deref() != Some(format!("{token}a").as_str()) {
        Some("a setting made in one transaction was gone in the next".to_string())
    } else {
        None
    };
    match evidence {
        Some(evidence) => Err(DbError::TransactionPooler { evidence }),
        None => Ok(()),
    }
}
