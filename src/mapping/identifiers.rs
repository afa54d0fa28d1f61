//! Local identifier systems per sending facility (`mappings/hl7v2/identifier-systems.toml`).
//!
//! A v2 identifier (CX, EI) whose assigning authority is an ISO OID or a UUID already names a
//! global system and keeps it. Otherwise the authority is a local name (CX.4.1 `ZSYY`) or absent,
//! and only the site knows which system it is: this table says so, per sending facility (MSH-4.1)
//! or for every facility (`"*"`), by the authority's name and else by the identifier type (CX.5).
//! The most specific rule wins: the facility's authority, `*`'s authority, the facility's type,
//! `*`'s type. Without a rule the caller falls back to a system scoped by facility and authority.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The loaded table.
#[derive(Debug, Clone, Default)]
pub struct IdentifierSystems {
    by_facility: HashMap<String, Rules>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rules {
    /// Assigning-authority name (CX.4.1, or its universal id when it has no name) -> system.
    #[serde(default)]
    authority: HashMap<String, String>,
    /// Identifier type (CX.5, table 0203) -> system.
    #[serde(default, rename = "type")]
    id_type: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    facility: HashMap<String, Rules>,
}

impl IdentifierSystems {
    /// Parses the table; each error names the facility and key. Systems must be absolute URIs.
    pub fn parse(text: &str) -> Result<IdentifierSystems, Vec<String>> {
        let file: File = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut errors = Vec::new();
        for (facility, rules) in &file.facility {
            for (kind, table) in [("authority", &rules.authority), ("type", &rules.id_type)] {
                for (key, system) in table {
                    if !is_absolute_uri(system) {
                        errors.push(format!(
                            "facility.\"{facility}\".{kind}.\"{key}\": '{system}' is not an absolute URI (urn:oid:..., http(s)://...)"
                        ));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(IdentifierSystems {
                by_facility: file.facility,
            })
        } else {
            errors.sort();
            Err(errors)
        }
    }

    /// Loads the file when it exists (no file: no rules).
    pub fn load(path: &Path) -> Result<IdentifierSystems, Vec<String>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(vec![e.to_string()]),
        }
    }

    /// The configured system for an identifier of `facility` with this local authority name and
    /// identifier type (either may be empty).
    pub fn system(&self, facility: &str, authority: &str, id_type: &str) -> Option<&str> {
        let rules = |f: &str| self.by_facility.get(f);
        let by = |f: &str, pick: fn(&Rules) -> &HashMap<String, String>, key: &str| {
            if key.is_empty() {
                return None;
            }
            rules(f).and_then(|r| pick(r).get(key)).map(String::as_str)
        };
        by(facility, |r| &r.authority, authority)
            .or_else(|| by("*", |r| &r.authority, authority))
            .or_else(|| by(facility, |r| &r.id_type, id_type))
            .or_else(|| by("*", |r| &r.id_type, id_type))
    }
}

fn is_absolute_uri(s: &str) -> bool {
    let ok_chars = !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    ok_chars
        && (s.starts_with("urn:oid:")
            || s.starts_with("urn:uuid:")
            || s.starts_with("http://")
            || s.starts_with("https://")
            || (s.starts_with("urn:") && s[4..].contains(':')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"
[facility."*".type]
NNCHN = "urn:oid:2.16.156.10011.1.3"
MR = "urn:example:any-mrn"

[facility."H1".authority]
ZSYY = "urn:oid:1.2.156.112604.1.2.1"

[facility."H1".type]
MR = "urn:oid:1.2.156.112604.1.2.1"
VN = "urn:oid:1.2.156.112604.1.2.2"
"#;

    #[test]
    fn the_most_specific_rule_names_the_system() {
        let t = IdentifierSystems::parse(TABLE).unwrap();
        // The facility's authority, before any type rule.
        assert_eq!(
            t.system("H1", "ZSYY", "NNCHN"),
            Some("urn:oid:1.2.156.112604.1.2.1")
        );
        // No authority rule: the facility's type, then every facility's type.
        assert_eq!(
            t.system("H1", "", "VN"),
            Some("urn:oid:1.2.156.112604.1.2.2")
        );
        assert_eq!(
            t.system("H1", "OTHER", "MR"),
            Some("urn:oid:1.2.156.112604.1.2.1")
        );
        assert_eq!(t.system("H2", "", "MR"), Some("urn:example:any-mrn"));
        assert_eq!(
            t.system("H2", "", "NNCHN"),
            Some("urn:oid:2.16.156.10011.1.3")
        );
        assert_eq!(t.system("H2", "ZSYY", "PI"), None);
        assert_eq!(t.system("H1", "", ""), None);
    }

    #[test]
    fn systems_must_be_absolute_uris_and_keys_known() {
        let bad =
            "[facility.\"H1\".type]\nMR = \"病案号\"\n[facility.\"*\".authority]\nX = \"urn:x\"\n";
        assert_eq!(
            IdentifierSystems::parse(bad).unwrap_err(),
            vec![
                "facility.\"*\".authority.\"X\": 'urn:x' is not an absolute URI (urn:oid:..., http(s)://...)".to_string(),
                "facility.\"H1\".type.\"MR\": '病案号' is not an absolute URI (urn:oid:..., http(s)://...)".to_string(),
            ]
        );
        let unknown = IdentifierSystems::parse("[facility.\"H1\".kind]\nMR = \"urn:oid:1.2\"\n");
        assert!(unknown.unwrap_err()[0].contains("unknown field `kind`"));
    }
}
