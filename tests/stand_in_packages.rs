//! Every Debian program and directory the stand-in nixpkgs (tests/nix/stand-in-nixpkgs) links or
//! copies comes from a package that a new Debian 12 machine gets: one `dev/packages.txt` names
//! (`.ci/run` installs those) or one of Debian's required packages. A machine that happened to
//! have the package (kmod, once) no longer hides a missing install step.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const STAND_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nix/stand-in-nixpkgs");
const PACKAGES_TXT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dev/packages.txt");

/// The prefixes of what the stand-in takes from Debian.
const DEBIAN_PREFIXES: &[&str] = &["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/", "/usr/lib/grub/", "/usr/lib/systemd/"];

/// The absolute Debian paths written in `text`: words (split at blanks, quotes, brackets and `;`)
/// that start with one of [`DEBIAN_PREFIXES`]. `$out/bin/x` and `${pkg}/bin/x` start with `$`.
fn debian_paths(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || "\"'[]();`".contains(c))
        .filter(|word| DEBIAN_PREFIXES.iter().any(|p| word.starts_with(p)))
        .map(|word| word.trim_end_matches(['.', ',']).to_string())
        .collect()
}

/// The packages `dev/packages.txt` names, in every group.
fn listed_packages(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| line.split_once(':').map(|(_, names)| names))
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect()
}

/// The package that installed `path` (Debian 12 registers many /usr/sbin files under /sbin).
fn owner(path: &str) -> Option<String> {
    let unmerged = path.strip_prefix("/usr").filter(|p| p.starts_with("/bin/") || p.starts_with("/sbin/"));
    let resolved = std::fs::canonicalize(path).ok().and_then(|p| p.to_str().map(str::to_string));
    [Some(path.to_string()), unmerged.map(str::to_string), resolved].into_iter().flatten().find_map(|candidate| {
        let out = Command::new("dpkg-query").args(["-S", &candidate]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .filter(|l| !l.starts_with("diversion"))
            .find_map(|l| l.rsplit_once(": ").filter(|(_, p)| *p == candidate).map(|(pkgs, _)| pkgs.split(", ").next().unwrap_or(pkgs).to_string()))
    })
}

fn is_required(package: &str) -> bool {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Priority} ${Essential}", package]).output().expect("dpkg-query");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.starts_with("required") || text.ends_with(" yes")
}

#[test]
fn the_path_finder_sees_what_the_stand_in_writes() {
    let paths = debian_paths(
        "(debian.fromDebian \"kmod\" [ \"/usr/bin/kmod\" \"/usr/sbin/modprobe\" ]);\n  cp -r /usr/lib/grub/i386-pc \"$out/lib/grub/i386-pc\"\n  builder = \"/bin/bash\"; ln -s $out/bin/x ${p}/bin/y",
    );
    assert_eq!(paths.into_iter().collect::<Vec<_>>(), ["/bin/bash", "/usr/bin/kmod", "/usr/lib/grub/i386-pc", "/usr/sbin/modprobe"]);
    let listed = listed_packages("# c\nexample: grub-efi-amd64-bin grub-pc-bin # why\ntest: kmod\n");
    assert_eq!(listed.into_iter().collect::<Vec<_>>(), ["grub-efi-amd64-bin", "grub-pc-bin", "kmod"]);
}

#[test]
fn every_debian_program_the_stand_in_links_is_installed_by_dev_packages_txt() {
    let listed = listed_packages(&std::fs::read_to_string(PACKAGES_TXT).expect("dev/packages.txt"));
    let mut paths = BTreeSet::new();
    for entry in std::fs::read_dir(STAND_IN).expect("the stand-in nixpkgs") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            paths.extend(debian_paths(&std::fs::read_to_string(&path).expect("read")));
        }
    }
    assert!(paths.len() > 20, "the stand-in links Debian's programs; found only {paths:?}");
    let mut problems = Vec::new();
    for path in &paths {
        match owner(path) {
            None => problems.push(format!("{path}: no installed Debian package has it; add the package that does to dev/packages.txt")),
            Some(package) if listed.contains(&package) || is_required(&package) => {}
            Some(package) => problems.push(format!(
                "{path}: from package {package}, which dev/packages.txt does not name and a new machine does not have (not a required package)"
            )),
        }
    }
    assert!(problems.is_empty(), "the stand-in nixpkgs ({}) links:\n{}", Path::new(STAND_IN).display(), problems.join("\n"));
}
