// embed_migrations! (src/db) tracks the migration files it embeds, not the directory: a new
// migration must rebuild the crate too.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
