//! Just enough of a Kconfig reader to say why a symbol is not built in: where each symbol is
//! defined, its `depends on` lines, the `if`/`menu` conditions it sits in (followed through
//! `source` from the top-level Kconfig, as kconfig itself reads the tree), whether it has a prompt,
//! its defaults and who selects it. It does not evaluate expressions: `make olddefconfig` did;
//! this only explains the result, with each symbol's value from the .config.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// One definition of a symbol (a symbol may be defined in several places).
#[derive(Debug, Default, Clone)]
pub struct Entry {
    /// `file:line` of `config SYMBOL`, relative to the source tree.
    pub at: String,
    pub depends: Vec<String>,
    /// The enclosing `if EXPR` and `menu` `depends on EXPR`, outermost first, with where they are.
    pub enclosing: Vec<(String, String)>,
    pub has_prompt: bool,
    /// `default`, `def_bool` and `def_tristate` expressions (with their `if` parts).
    pub defaults: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Kconfig {
    entries: HashMap<String, Vec<Entry>>,
    /// Symbol to the `select` lines that name it: (selecting symbol, where, condition).
    selected_by: HashMap<String, Vec<(String, String)>>,
}

/// The values of a .config: `CONFIG_X=v`, and `n` for `# CONFIG_X is not set`.
pub fn values(dotconfig: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for line in dotconfig.lines() {
        if let Some((name, value)) = line.strip_prefix("CONFIG_").and_then(|l| l.split_once('=')) {
            map.insert(name.to_string(), value.to_string());
        } else if let Some(name) = line.strip_prefix("# CONFIG_").and_then(|l| l.strip_suffix(" is not set")) {
            map.insert(name.to_string(), "n".to_string());
        }
    }
    map
}

/// Whether `expr` names `symbol` only in a form an off symbol satisfies: `!S`, `S=n`, `S != ...`.
fn negated(expr: &str, symbol: &str) -> bool {
    let compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    let bounded = |at: usize, len: usize| {
        let before = compact[..at].chars().last();
        let after = compact[at + len..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut any = false;
    for (at, _) in compact.match_indices(symbol).filter(|(at, _)| bounded(*at, symbol.len())) {
        any = true;
        let rest = &compact[at + symbol.len()..];
        let negative = compact[..at].ends_with('!') || rest.starts_with("=n") || rest.starts_with("!=");
        if !negative {
            return false;
        }
    }
    any
}

/// The symbols an expression names (not the constants y, m, n, numbers or strings).
pub fn symbols_of(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_string = false;
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_string = !in_string;
            continue;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
            continue;
        }
        let is_symbol = !word.is_empty()
            && !["y", "m", "n", "if"].contains(&word.as_str())
            && !word.bytes().all(|b| b.is_ascii_digit())
            && !word.starts_with("0x");
        if is_symbol && !out.contains(&word) {
            out.push(word.clone());
        }
        word.clear();
    }
    out
}

/// Drops a `# comment` outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => return &line[..i],
            _ => {}
        }
    }
    line
}

fn indent(line: &str) -> usize {
    line.chars().take_while(|c| c.is_whitespace()).map(|c| if c == '\t' { 8 } else { 1 }).sum()
}

/// What the block keywords push: an `if` condition or a menu/choice (whose `depends on` lines,
/// before its first entry, become its condition).
struct Block {
    keyword: &'static str,
    condition: Option<(String, String)>,
}

impl Kconfig {
    /// Reads the tree from its top-level `Kconfig`, following `source` as kconfig does for `arch`.
    pub fn read(srctree: &Path, arch: &str) -> Result<Kconfig, String> {
        let mut kconfig = Kconfig::default();
        let mut blocks = Vec::new();
        kconfig.read_file(srctree, Path::new("Kconfig"), arch, &mut blocks)?;
        Ok(kconfig)
    }

    fn read_file(&mut self, srctree: &Path, file: &Path, arch: &str, blocks: &mut Vec<Block>) -> Result<(), String> {
        let text = std::fs::read_to_string(srctree.join(file)).map_err(|e| format!("{}: {e}", file.display()))?;
        // Continuation lines (a trailing backslash) joined, keeping the first line's number.
        let mut lines: Vec<(usize, String)> = Vec::new();
        let mut pending: Option<(usize, String)> = None;
        for (i, raw) in text.lines().enumerate() {
            let (number, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
            joined.push_str(raw);
            if let Some(stripped) = joined.strip_suffix('\\') {
                pending = Some((number, stripped.to_string()));
            } else {
                lines.push((number, joined));
            }
        }
        let mut current: Option<(String, Entry)> = None;
        // Inside a menu or choice before its first entry: its `depends on` lines are its condition.
        let mut menu_header = false;
        let mut help_indent: Option<Option<usize>> = None;
        for (number, raw) in &lines {
            if let Some(level) = help_indent {
                if raw.trim().is_empty() {
                    continue;
                }
                match level {
                    None => {
                        help_indent = Some(Some(indent(raw)));
                        continue;
                    }
                    Some(level) if indent(raw) >= level => continue,
                    Some(_) => help_indent = None,
                }
            }
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            let at = format!("{}:{number}", file.display());
            let (keyword, rest) = line.split_once(char::is_whitespace).map_or((line, ""), |(k, r)| (k, r.trim()));
            match keyword {
                "config" | "menuconfig" | "choice" | "comment" | "menu" | "endmenu" | "if" | "endif" | "endchoice"
                | "source" | "rsource" | "osource" | "orsource" | "mainmenu" => {
                    if let Some((name, entry)) = current.take() {
                        self.entries.entry(name).or_default().push(entry);
                    }
                    menu_header = false;
                }
                _ => {}
            }
            match keyword {
                "config" | "menuconfig" => {
                    let enclosing = blocks.iter().filter_map(|b| b.condition.clone()).collect();
                    current = Some((rest.to_string(), Entry { at, enclosing, ..Entry::default() }));
                }
                "menu" | "choice" => {
                    blocks.push(Block { keyword: "menu", condition: None });
                    menu_header = true;
                }
                "if" => blocks.push(Block { keyword: "if", condition: Some((format!("if {rest}"), at)) }),
                "endif" | "endmenu" | "endchoice" => {
                    let wanted = if keyword == "endif" { "if" } else { "menu" };
                    match blocks.pop() {
                        Some(b) if b.keyword == wanted => {}
                        _ => return Err(format!("{at}: unbalanced {keyword}")),
                    }
                }
                "source" | "rsource" | "osource" | "orsource" => {
                    let target = rest.trim_matches('"').replace("$(SRCARCH)", arch);
                    if target.contains("$(") {
                        continue; // another architecture's (um's $(HEADER_ARCH))
                    }
                    let path = if matches!(keyword, "rsource" | "orsource") {
                        file.parent().unwrap_or(Path::new("")).join(&target)
                    } else {
                        PathBuf::from(&target)
                    };
                    if keyword.starts_with('o') && !srctree.join(&path).exists() {
                        continue;
                    }
                    self.read_file(srctree, &path, arch, blocks)?;
                }
                "help" | "---help---" => help_indent = Some(None),
                "depends" => {
                    let expr = rest.strip_prefix("on").unwrap_or(rest).trim().to_string();
                    if let Some((_, entry)) = current.as_mut() {
                        entry.depends.push(expr);
                    } else if menu_header && let Some(block) = blocks.last_mut() {
                        let condition = match block.condition.take() {
                            Some((c, where_)) => (format!("{c} && {expr}"), where_),
                            None => (format!("menu depends on {expr}"), at),
                        };
                        block.condition = Some(condition);
                    }
                }
                "select" => {
                    if let Some((name, _)) = current.as_ref() {
                        let (target, condition) = rest.split_once(" if ").map_or((rest, ""), |(t, c)| (t.trim(), c.trim()));
                        let how = if condition.is_empty() { at } else { format!("{at} if {condition}") };
                        self.selected_by.entry(target.to_string()).or_default().push((name.clone(), how));
                    }
                }
                "tristate" | "bool" | "prompt" | "string" | "int" | "hex" => {
                    if let Some((_, entry)) = current.as_mut()
                        && (keyword == "prompt" || rest.starts_with('"'))
                    {
                        entry.has_prompt = true;
                    }
                }
                "default" | "def_bool" | "def_tristate" => {
                    if let Some((_, entry)) = current.as_mut() {
                        entry.defaults.push(format!("{keyword} {rest}"));
                    }
                }
                _ => {}
            }
        }
        if let Some((name, entry)) = current.take() {
            self.entries.entry(name).or_default().push(entry);
        }
        Ok(())
    }

    pub fn entries(&self, symbol: &str) -> &[Entry] {
        self.entries.get(symbol).map_or(&[], Vec::as_slice)
    }

    fn has_prompt(&self, symbol: &str) -> bool {
        self.entries(symbol).iter().any(|e| e.has_prompt)
    }

    /// The symbols to build in as well so that `symbol` can be `y`: every symbol its conditions
    /// name that is a module now, or off (n or not in the .config) where the condition names it
    /// as a requirement rather than negated (`!X`, `X=n`, `X != y` are satisfied by an X that is
    /// off); a symbol without a prompt (set only by its defaults, like PTP_1588_CLOCK_OPTIONAL)
    /// is followed to the symbols that decide it.
    pub fn to_build_in(&self, symbol: &str, values: &HashMap<String, String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut seen = BTreeSet::from([symbol.to_string()]);
        self.collect(symbol, values, &mut seen, &mut out);
        out
    }

    fn collect(&self, symbol: &str, values: &HashMap<String, String>, seen: &mut BTreeSet<String>, out: &mut BTreeSet<String>) {
        for entry in self.entries(symbol) {
            let exprs = entry.depends.iter().chain(entry.enclosing.iter().map(|(c, _)| c));
            let exprs: Vec<&String> =
                if self.has_prompt(symbol) { exprs.collect() } else { exprs.chain(&entry.defaults).collect() };
            for expr in exprs {
                for s in symbols_of(expr) {
                    let wanting = match values.get(&s).map(String::as_str) {
                        Some("m") => true,
                        None | Some("n") => !negated(expr, &s),
                        Some(_) => false,
                    };
                    if !wanting || !seen.insert(s.clone()) {
                        continue;
                    }
                    if self.has_prompt(&s) {
                        out.insert(s);
                    } else {
                        self.collect(&s, values, seen, out);
                    }
                }
            }
        }
    }

    /// Why `symbol` is not `y`: each definition's conditions with the values of the symbols in
    /// them, its selectors, and what to build in as well.
    pub fn explain(&self, symbol: &str, values: &HashMap<String, String>) -> String {
        let value = |s: &str| values.get(s).cloned().unwrap_or_else(|| "undefined".into());
        let with_values = |expr: &str| {
            let named: Vec<String> = symbols_of(expr).iter().map(|s| format!("{s}={}", value(s))).collect();
            if named.is_empty() { expr.to_string() } else { format!("{expr}   [{}]", named.join(", ")) }
        };
        let mut text = format!("{symbol}: wanted y, is {}\n", value(symbol));
        let entries = self.entries(symbol);
        if entries.is_empty() {
            text.push_str("    no `config` entry in this kernel's Kconfig: misspelt, or gone from this version\n");
        }
        for entry in entries {
            text.push_str(&format!("    defined at {}{}\n", entry.at, if entry.has_prompt { "" } else { " (no prompt: set only by its defaults or a select)" }));
            for (condition, at) in &entry.enclosing {
                text.push_str(&format!("      inside {} ({at})\n", with_values(condition)));
            }
            for d in &entry.depends {
                text.push_str(&format!("      depends on {}\n", with_values(d)));
            }
            if !entry.has_prompt {
                for d in &entry.defaults {
                    text.push_str(&format!("      {}\n", with_values(d)));
                }
            }
        }
        for (by, at) in self.selected_by.get(symbol).into_iter().flatten() {
            text.push_str(&format!("      selected by {by}={} ({at})\n", value(by)));
        }
        let add = self.to_build_in(symbol, values);
        if add.is_empty() {
            text.push_str("    nothing among its dependencies to build in: see the conditions above\n");
        } else {
            text.push_str(&format!("    build in as well: {}\n", add.into_iter().collect::<Vec<_>>().join(" ")));
        }
        text
    }
}
