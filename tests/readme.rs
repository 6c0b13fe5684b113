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

/// Every test the claims table names, after the file it names, is a function in that file:
/// a claim whose test was renamed or moved would otherwise point at nothing.
#[test]
fn every_test_the_claims_table_names_exists_in_its_file() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let start = readme.find("### Safety and security claims").expect("README.md has the claims table");
    let end = readme[start..].find("\n## ").map_or(readme.len(), |e| start + e);
    let mut missing = Vec::new();
    let mut named = 0;
    for row in readme[start..end].lines().filter(|l| l.starts_with('|')) {
        let mut file: Option<(String, String)> = None;
        for (k, quoted) in row.split('`').enumerate() {
            if k % 2 == 0 {
                continue;
            }
            let is_path = quoted.ends_with(".rs") && ["src/", "tests/", "benches/"].iter().any(|p| quoted.starts_with(p)) && !quoted.contains(' ');
            if is_path {
                match std::fs::read_to_string(format!("{root}/{quoted}")) {
                    Ok(text) => file = Some((quoted.to_string(), text)),
                    Err(e) => {
                        missing.push(format!("{quoted}: {e}"));
                        file = None;
                    }
                }
                continue;
            }
            // A test's name: lower case words joined by `_`; anything else (a command, an
            // option) ends the file's list.
            let is_test_name = quoted.contains('_') && quoted.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            match (&file, is_test_name) {
                (Some((path, text)), true) => {
                    named += 1;
                    if !text.contains(&format!("fn {quoted}(")) && !text.contains(&format!("fn {quoted}<")) {
                        missing.push(format!("{path} has no fn {quoted}"));
                    }
                }
                (_, false) => file = None,
                (None, true) => {}
            }
        }
    }
    assert!(named > 50, "the claims table names only {named} tests: is this still the table?");
    assert!(missing.is_empty(), "README.md's claims table names what is not there:\n{}", missing.join("\n"));
}
