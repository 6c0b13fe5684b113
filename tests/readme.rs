//! The README's option table is generated from the schema; this test fails when they drift.
//! `UPDATE_README=1 cargo test --test readme` rewrites the table between its markers, then fails
//! showing the diff (tests/switches).

mod switches;

use nixos_pxe_installer::schema;

const BEGIN: &str = "<!-- options:begin (generated from src/schema.rs; UPDATE_README=1 cargo test --test readme) -->\n";
const END: &str = "<!-- options:end -->";

#[test]
fn readme_option_table_matches_the_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let start = readme.find(BEGIN).expect("README.md has the options:begin marker") + BEGIN.len();
    let end = readme[start..].find(END).expect("README.md has the options:end marker") + start;
    let table = schema::markdown_table();
    let update = switches::on("UPDATE_README");
    if readme[start..end] != table {
        let diff = format!("README.md's option table:\n{}", switches::diff(&readme[start..end], &table));
        if update {
            let updated = format!("{}{}{}", &readme[..start], table, &readme[end..]);
            std::fs::write(path, updated).expect("write README.md");
            switches::rewritten("UPDATE_README", &[diff]);
        }
        panic!("README.md's option table differs from src/schema.rs (UPDATE_README=1 cargo test --test readme rewrites it and shows the diff):\n{diff}");
    }
}

#[test]
fn readme_documents_every_subcommand() {
    use clap::CommandFactory;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let cli = nixos_pxe_installer::cli::Cli::command();
    for sub in cli.get_subcommands() {
        let name = sub.get_name();
        assert!(readme.contains(&format!("nixos-pxe {name}")), "README.md does not document `nixos-pxe {name}`");
    }
}
