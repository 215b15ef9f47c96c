// The migrations are embedded at compile time (`embed_migrations!`); without
// this, a new migration directory would not rebuild the binary that runs them.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
