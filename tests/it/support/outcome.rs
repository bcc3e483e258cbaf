//! What a statement came to, with the SQLSTATE and constraint of its error: diesel reports
//! neither for a code of our own (UQ001) nor in a form to compare.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;

use super::text;

/// Why a statement failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub sqlstate: String,
    /// The constraint the error names, or empty.
    pub constraint: String,
    pub message: String,
}

impl Failure {
    /// `SQLSTATE constraint`: what two ways of refusing the same thing must share.
    pub fn code(&self) -> String {
        format!("{} {}", self.sqlstate, self.constraint)
    }
}

const OUTCOME_FN: &str = "CREATE OR REPLACE FUNCTION pg_temp.uw_outcome(q text) RETURNS text[]
    LANGUAGE plpgsql AS $$
    DECLARE c text; m text;
    BEGIN
        EXECUTE q;
        RETURN NULL;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS c = CONSTRAINT_NAME, m = MESSAGE_TEXT;
        RETURN ARRAY[SQLSTATE, COALESCE(c, ''), m];
    END $$";

/// Runs `sql` (in a subtransaction, so that a failure leaves the session usable); `Err`
/// with its SQLSTATE, constraint and message when it fails.
pub fn outcome(conn: &mut PgConnection, sql: &str) -> Result<(), Failure> {
    conn.batch_execute(OUTCOME_FN)
        .expect("the outcome function");
    let quoted = sql.replace('\'', "''");
    let parts = text(
        conn,
        &format!("SELECT array_to_string(pg_temp.uw_outcome('{quoted}'), E'\\x1f') AS t"),
    );
    if parts.is_empty() {
        return Ok(());
    }
    let mut parts = parts.splitn(3, '\u{1f}').map(str::to_string);
    Err(Failure {
        sqlstate: parts.next().unwrap_or_default(),
        constraint: parts.next().unwrap_or_default(),
        message: parts.next().unwrap_or_default(),
    })
}
