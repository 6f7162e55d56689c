//! The `settings!` macro: turns the one declaration of every setting in `config.rs` into the
//! layer type ([`super::Settings`]: clap flags, `MOKV_*` environment, YAML keys), the resolved
//! [`super::NodeConfig`] and the reference table ([`super::reference`]).
//!
//! A declaration has five groups, in this order:
//! - `required`: no default; `resolve` fails naming the key when no layer gives it;
//! - `defaulted`: `name: Type = default-expression`;
//! - `optional`: unset means off (`NodeConfig` holds an `Option`);
//! - `inputs`: read only to compute a `derived` value (`=> "what the default is"`, in words);
//! - `derived`: `NodeConfig` fields computed from the settings by `config::derive`.
//!
//! Each setting may carry `#[arg(..)]` options for clap and `as "key"` when its key is not the
//! kebab-case of its name. Doc comments become the `--help` text, the rustdoc of the
//! `NodeConfig` field and the description column of the reference.

use std::path::PathBuf;

/// What a setting's type looks like to an operator, and how its default is written.
pub(crate) trait SettingValue {
    /// The type column of the reference.
    const TYPE: &'static str;
    /// The default as the reference prints it.
    fn show(&self) -> String;
    /// Expands `$VAR` and `~` (paths only).
    fn expand(&mut self) {}
}

impl SettingValue for PathBuf {
    const TYPE: &'static str = "path";
    fn show(&self) -> String {
        self.display().to_string()
    }
    fn expand(&mut self) {
        *self = super::expand_path(self);
    }
}

impl SettingValue for String {
    const TYPE: &'static str = "string";
    fn show(&self) -> String {
        self.clone()
    }
}

impl SettingValue for bool {
    const TYPE: &'static str = "bool";
    fn show(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for Vec<String> {
    const TYPE: &'static str = "list";
    fn show(&self) -> String {
        if self.is_empty() {
            "none".to_owned()
        } else {
            self.join(",")
        }
    }
}

macro_rules! integer_setting {
    ($($t:ty),*) => {$(
        impl SettingValue for $t {
            const TYPE: &'static str = "integer";
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
integer_setting!(u16, u32, u64, usize);

/// The key of a setting: the explicit `as "key"`, else the kebab-case of its name.
pub(crate) fn key_of(name: &str, explicit: &[&'static str]) -> String {
    match explicit.first() {
        Some(k) => (*k).to_owned(),
        None => name.replace('_', "-"),
    }
}

/// One doc comment as one line of text.
pub(crate) fn doc_text(lines: &[&str]) -> String {
    lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

macro_rules! settings {
    (
        required {$(
            $(#[doc = $rdoc:literal])* $(#[arg($($rarg:tt)*)])?
            $rname:ident $(as $rkey:literal)? : $rty:ty,
        )*}
        defaulted {$(
            $(#[doc = $ddoc:literal])* $(#[arg($($darg:tt)*)])?
            $dname:ident $(as $dkey:literal)? : $dty:ty = $ddefault:expr,
        )*}
        optional {$(
            $(#[doc = $odoc:literal])* $(#[arg($($oarg:tt)*)])?
            $oname:ident $(as $okey:literal)? : $oty:ty,
        )*}
        inputs {$(
            $(#[doc = $idoc:literal])* $(#[arg($($iarg:tt)*)])?
            $iname:ident $(as $ikey:literal)? : $ity:ty => $idefault:literal,
        )*}
        derived {$(
            $(#[doc = $xdoc:literal])*
            $xname:ident : $xty:ty,
        )*}
    ) => {
        /// One layer of settings (flags and environment, a YAML file, `--dev`); `None` = not
        /// given in this layer.
        #[derive(clap::Args, serde::Deserialize, Debug, Default, Clone)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        pub struct Settings {
            $($(#[doc = $rdoc])* #[arg(long $(= $rkey)? $(, $($rarg)*)?)]
              $(#[serde(rename = $rkey)])? pub $rname: Option<$rty>,)*
            $($(#[doc = $ddoc])* #[arg(long $(= $dkey)? $(, $($darg)*)?)]
              $(#[serde(rename = $dkey)])? pub $dname: Option<$dty>,)*
            $($(#[doc = $odoc])* #[arg(long $(= $okey)? $(, $($oarg)*)?)]
              $(#[serde(rename = $okey)])? pub $oname: Option<$oty>,)*
            $($(#[doc = $idoc])* #[arg(long $(= $ikey)? $(, $($iarg)*)?)]
              $(#[serde(rename = $ikey)])? pub $iname: Option<$ity>,)*
        }

        impl Settings {
            /// `self` wins where it has a value.
            pub fn over(self, below: Settings) -> Settings {
                Settings {
                    $($rname: self.$rname.or(below.$rname),)*
                    $($dname: self.$dname.or(below.$dname),)*
                    $($oname: self.$oname.or(below.$oname),)*
                    $($iname: self.$iname.or(below.$iname),)*
                }
            }

            /// Expands `$VAR` and `~` in every path setting.
            pub fn expand_paths(mut self) -> Settings {
                use $crate::config::declare::SettingValue as _;
                $(if let Some(v) = self.$rname.as_mut() { v.expand() })*
                $(if let Some(v) = self.$dname.as_mut() { v.expand() })*
                $(if let Some(v) = self.$oname.as_mut() { v.expand() })*
                $(if let Some(v) = self.$iname.as_mut() { v.expand() })*
                self
            }
        }

        /// Every setting, in declaration order: what `mokvd config reference` prints.
        pub fn reference() -> Vec<SettingDoc> {
            use $crate::config::declare::{doc_text, key_of, SettingValue};
            vec![
                $(SettingDoc {
                    name: stringify!($rname),
                    key: key_of(stringify!($rname), &[$($rkey)?]),
                    ty: <$rty as SettingValue>::TYPE,
                    default: "required".to_owned(),
                    doc: doc_text(&[$($rdoc),*]),
                },)*
                $(SettingDoc {
                    name: stringify!($dname),
                    key: key_of(stringify!($dname), &[$($dkey)?]),
                    ty: <$dty as SettingValue>::TYPE,
                    default: SettingValue::show(&{ let d: $dty = $ddefault; d }),
                    doc: doc_text(&[$($ddoc),*]),
                },)*
                $(SettingDoc {
                    name: stringify!($oname),
                    key: key_of(stringify!($oname), &[$($okey)?]),
                    ty: <$oty as SettingValue>::TYPE,
                    default: "unset".to_owned(),
                    doc: doc_text(&[$($odoc),*]),
                },)*
                $(SettingDoc {
                    name: stringify!($iname),
                    key: key_of(stringify!($iname), &[$($ikey)?]),
                    ty: <$ity as SettingValue>::TYPE,
                    default: $idefault.to_owned(),
                    doc: doc_text(&[$($idoc),*]),
                },)*
            ]
        }

        /// A checked configuration: every setting with its default applied, plus the values
        /// derived from several settings.
        #[derive(Debug, Clone)]
        pub struct NodeConfig {
            $($(#[doc = $rdoc])* pub $rname: $rty,)*
            $($(#[doc = $ddoc])* pub $dname: $dty,)*
            $($(#[doc = $odoc])* pub $oname: Option<$oty>,)*
            $($(#[doc = $xdoc])* pub $xname: $xty,)*
        }

        /// The settings that have a value of their own after defaults (derivation input).
        struct Plain {
            $($rname: $rty,)*
            $($dname: $dty,)*
            $($oname: Option<$oty>,)*
        }

        /// The settings read only to compute derived values.
        struct Inputs {
            $($iname: Option<$ity>,)*
        }

        /// The values computed from several settings.
        struct Derived {
            $($xname: $xty,)*
        }

        impl NodeConfig {
            /// Applies defaults, derives the compound values and runs [`NodeConfig::validate`].
            pub fn resolve(s: Settings) -> Result<NodeConfig, ConfigError> {
                use $crate::config::declare::key_of;
                let Settings { $($rname,)* $($dname,)* $($oname,)* $($iname,)* } = s;
                let mut plain = Plain {
                    $($rname: $rname.ok_or_else(|| {
                        bad(&key_of(stringify!($rname), &[$($rkey)?]), "is required")
                    })?,)*
                    $($dname: $dname.unwrap_or_else(|| $ddefault),)*
                    $($oname,)*
                };
                let derived: Derived = derive(&mut plain, Inputs { $($iname,)* })?;
                let Plain { $($rname,)* $($dname,)* $($oname,)* } = plain;
                let cfg = NodeConfig {
                    $($rname,)* $($dname,)* $($oname,)*
                    $($xname: derived.$xname,)*
                };
                cfg.validate()?;
                Ok(cfg)
            }
        }
    };
}
pub(crate) use settings;
