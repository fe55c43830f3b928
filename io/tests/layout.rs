//! The shape of `io/src` that `docs/decisions.md` promises, checked on every test run: no
//! import cycle between its top-level modules, no file over the size a reader can hold,
//! and an owner state machine that does no I/O, reads no clock and keeps no thread-local.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Most lines in one source file (`docs/decisions.md`: "a file a reader can hold").
const FILE_LINES_MAX: usize = 700;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`owner/commit.rs` → `owner`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// What `lib.rs` re-exports at the crate root, by the module it comes from.
fn reexports() -> BTreeMap<String, String> {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut m = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        for n in names.trim_matches(|c| "{};".contains(c)).split(',') {
            m.insert(n.trim().to_owned(), module.to_owned());
        }
    }
    m
}

/// The modules a source text names as `crate::<module>`.
fn uses(text: &str, names: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `ringbearer_io::crate::…` cannot occur; `foo_crate::` is not ours
        }
        let rest = &text[i + "crate::".len()..];
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            continue;
        }
        out.insert(names.get(&ident).cloned().unwrap_or(ident));
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let names = reexports();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let m = module_of(&f);
        if m == "lib" {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        let deps = g.entry(m.clone()).or_default();
        for d in uses(&text, &names) {
            if d != m {
                deps.insert(d);
            }
        }
    }
    g
}

#[test]
fn no_import_cycle_between_io_modules() {
    let g = graph();
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n.to_owned());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        if let Some(c) = visit(n, &g, &mut Vec::new(), &mut done) {
            panic!(
                "import cycle in io/src: {}\nwhole graph: {g:#?}",
                c.join(" → ")
            );
        }
    }
}

#[test]
fn crate_paths_are_read_as_module_names() {
    let names = BTreeMap::new();
    assert_eq!(
        uses("use crate::owner::X; crate::IoConfig; my_crate::x", &names),
        BTreeSet::from(["owner".to_owned(), "IoConfig".to_owned()])
    );
}

#[test]
fn no_file_over_the_size_a_reader_can_hold() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let big: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = fs::read_to_string(f).unwrap().lines().count();
            (n > FILE_LINES_MAX).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(big.is_empty(), "over {FILE_LINES_MAX} lines: {big:?}");
}

#[test]
fn the_owner_does_no_io_and_reads_no_clock() {
    let mut files = Vec::new();
    rust_files(&src().join("owner"), &mut files);
    assert!(!files.is_empty());
    let banned = [
        "glommio",
        "SystemTime",
        "Instant::now",
        "thread_local",
        "metrics::with",
        "TcpStream",
        "TcpListener",
        "std::fs",
        "clock::now",
        "crate::host",
        "crate::mesh",
        "crate::conn",
        "crate::api",
    ];
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        for b in banned {
            let hit = text
                .lines()
                .any(|l| l.contains(b) && !l.trim_start().starts_with("//"));
            assert!(!hit, "{} uses `{b}`", f.display());
        }
    }
}
