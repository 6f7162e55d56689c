//! Paths in settings: `$VAR` and `~` expansion, and the `--dev` directory.

use std::path::{Path, PathBuf};

/// `$VAR` / `${VAR}` and a leading `~` in a path, as the original's example config used
/// `$HOME/.mokv/...`. Unknown variables are left as they are.
pub fn expand_path(p: &Path) -> PathBuf {
    let Some(s) = p.to_str() else { return p.to_path_buf() };
    let home = std::env::var("HOME").unwrap_or_default();
    let s = match s.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{home}{rest}"),
        _ => s.to_owned(),
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match (name.is_empty(), std::env::var(name)) {
            (false, Ok(v)) => out.push_str(&v),
            _ => out.push_str(&rest[pos..rest.len() - tail.len()]),
        }
        rest = tail;
    }
    out.push_str(rest);
    PathBuf::from(out)
}

/// Default directory of `--dev`: `$HOME/.mokv-dev`, or `./.mokv-dev` without a home.
pub fn default_dev_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h).join(".mokv-dev"),
        _ => PathBuf::from(".mokv-dev"),
    }
}
