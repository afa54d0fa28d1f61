//! SMART App Launch v2 scopes: `context/Type.perms[?param=value&...]`.
//!
//! `context` is `patient`, `user` or `system`; `Type` a resource type or `*`; `perms` a subset of
//! `cruds` in that order (v2), or the v1 forms `read` (= `rs`), `write` (= `cud`) and `*`
//! (= `cruds`). Restrictions after `?` are search parameters a resource must match. Scopes we do
//! not understand (`openid`, `launch/patient`, `fhirUser`, ...) grant nothing and are kept out.

/// Create, read, update, delete, search, as bits.
pub type Perms = u8;
pub const C: Perms = 1;
pub const R: Perms = 2;
pub const U: Perms = 4;
pub const D: Perms = 8;
pub const S: Perms = 16;
pub const ALL: Perms = C | R | U | D | S;

/// Who the scope speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Only the launch patient's compartment.
    Patient,
    /// What the user may see.
    User,
    /// A backend system.
    System,
}

/// One resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub context: Context,
    /// `None` is `*`.
    pub resource_type: Option<String>,
    pub perms: Perms,
    /// `?param=value` restrictions (all must hold).
    pub restrictions: Vec<(String, String)>,
}

impl Scope {
    /// Parses one scope; `None` for scopes that are not resource scopes.
    pub fn parse(s: &str) -> Option<Scope> {
        let (main, query) = match s.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (s, None),
        };
        let (ctx, rest) = main.split_once('/')?;
        let context = match ctx {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            _ => return None,
        };
        let (ty, perms) = rest.split_once('.')?;
        let resource_type = match ty {
            "*" => None,
            t if !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Some(t.to_string())
            }
            _ => return None,
        };
        let perms = parse_perms(perms)?;
        let restrictions = query
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        Some(Scope {
            context,
            resource_type,
            perms,
            restrictions,
        })
    }

    /// Whether the scope names `resource_type` (or all types).
    pub fn covers(&self, resource_type: &str) -> bool {
        self.resource_type
            .as_deref()
            .is_none_or(|t| t == resource_type)
    }
}

fn parse_perms(p: &str) -> Option<Perms> {
    match p {
        "read" => return Some(R | S),
        "write" => return Some(C | U | D),
        "*" => return Some(ALL),
        _ => {}
    }
    let order = [(b'c', C), (b'r', R), (b'u', U), (b'd', D), (b's', S)];
    let mut bits = 0;
    let mut at = 0;
    for b in p.bytes() {
        let i = order[at..].iter().position(|(c, _)| *c == b)? + at;
        bits |= order[i].1;
        at = i + 1;
    }
    (bits != 0).then_some(bits)
}

/// Parses a space-separated scope string, keeping the resource scopes.
pub fn parse_all(s: &str) -> Vec<Scope> {
    s.split_whitespace().filter_map(Scope::parse).collect()
}

/// The letters of a permission set (`rs`), for messages.
pub fn letters(p: Perms) -> String {
    [(C, 'c'), (R, 'r'), (U, 'u'), (D, 'd'), (S, 's')]
        .iter()
        .filter(|(b, _)| p & b != 0)
        .map(|(_, c)| *c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let s = Scope::parse("patient/*.rs").unwrap();
        assert_eq!(s.context, Context::Patient);
        assert_eq!(s.resource_type, None);
        assert_eq!(s.perms, R | S);
        let s = Scope::parse("user/Observation.cruds").unwrap();
        assert_eq!(s.perms, ALL);
        assert!(s.covers("Observation") && !s.covers("Patient"));
        let s = Scope::parse("system/*.*").unwrap();
        assert_eq!((s.context, s.perms), (Context::System, ALL));
        let s = Scope::parse(
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        )
        .unwrap();
        assert_eq!(s.restrictions[0].0, "category");
        assert!(s.restrictions[0].1.ends_with("|laboratory"));
        assert_eq!(Scope::parse("user/Patient.read").unwrap().perms, R | S);
        assert_eq!(Scope::parse("user/Patient.write").unwrap().perms, C | U | D);
    }

    #[test]
    fn rejects_what_is_not_a_resource_scope() {
        for s in [
            "openid",
            "launch/patient",
            "fhirUser",
            "user/Observation.sr",
            "user/Observation.x",
            "admin/*.*",
            "user/../x.r",
            "user/Observation.",
        ] {
            assert_eq!(Scope::parse(s), None, "{s}");
        }
        assert_eq!(parse_all("openid patient/*.rs fhirUser").len(), 1);
    }
}
