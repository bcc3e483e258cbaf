//! SQL examples of the documentation, run by the tests as written.

/// The fenced ```sql block of `doc` (a path from the crate root) that contains `marker`.
pub fn sql_example(doc: &str, marker: &str) -> String {
    let path = format!("{}/{doc}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.split("```sql\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("{doc} has no ```sql block containing {marker:?}"))
        .to_string()
}
