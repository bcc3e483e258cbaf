//! The clock the tests run at: the tests, the daemons they start and the test cluster share
//! one, also when it is moved (scripts/test-at), so dates taken from the database's `now()`
//! mean the same instant to every process of a test.

use chrono::Utc;

use crate::support::{TestDb, clock};

#[test]
fn the_database_and_the_tests_read_the_same_clock() {
    let db = TestDb::new();
    let skew = (clock::db_now(&db) - Utc::now()).num_milliseconds().abs();
    assert!(
        skew < 5_000,
        "the test cluster's clock is {skew} ms away from the tests' clock"
    );
}
