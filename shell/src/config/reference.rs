//! The configuration reference: one row per setting, printed by `mokvd config reference` and
//! kept equal to the README's table by a test.

use super::{env_var_of, reference};

/// One setting as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingDoc {
    /// The Rust name (a field of [`super::Settings`] and, unless it only feeds a derived value,
    /// of [`super::NodeConfig`]).
    pub name: &'static str,
    /// YAML key and flag (`--key`); the environment variable is [`env_var_of`] it.
    pub key: String,
    /// `path`, `string`, `bool`, `integer` or `list` (comma separated on the command line).
    pub ty: &'static str,
    /// The default, or `required` / `unset` / how it is derived.
    pub default: String,
    pub doc: String,
}

/// The reference as a markdown table (no trailing newline after the last row).
pub fn markdown_reference() -> String {
    let mut out = String::from(
        "| key (flag `--key`) | environment | type | default | meaning |\n|---|---|---|---|---|",
    );
    for d in reference() {
        // Literal values in code style; words (`required`, `unset`, a description) as text.
        let default = match d.default.as_str() {
            "required" | "unset" | "none" => d.default.clone(),
            words if words.contains(' ') => d.default.clone(),
            value => format!("`{value}`"),
        };
        out.push_str(&format!(
            "\n| `{}` | `{}` | {} | {} | {} |",
            d.key,
            env_var_of(&d.key),
            d.ty,
            default,
            d.doc.replace('|', "\\|"),
        ));
    }
    out
}
