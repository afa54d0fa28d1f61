//! Search against an independent brute-force evaluator over real data (a subset of the Synthea
//! bundles and of the R4 examples): for every query, the set of ids the server returns must equal
//! the set the slow evaluator here finds by evaluating each SearchParameter's FHIRPath expression
//! (the full core expression, via the engine) on every resource and applying the matching rules
//! of R4 written out again below. Prints `N passed, M failed`.
mod common;

use common::{TestServer, json_of};
use huitong::definitions::Definitions;
use huitong::fhirpath::{self, Environment, Value as PathValue};
use reqwest::Method;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use unicode_normalization::UnicodeNormalization;

type Key = (String, String);

struct World {
    resources: HashMap<Key, Value>,
    by_type: HashMap<String, Vec<String>>,
}

impl World {
    fn of_type(&self, ty: &str) -> impl Iterator<Item = (&String, &Value)> {
        self.by_type
            .get(ty)
            .into_iter()
            .flatten()
            .filter_map(move |id| {
                self.resources
                    .get(&(ty.to_string(), id.clone()))
                    .map(|r| (id, r))
            })
    }
}

/// An item of a FHIRPath result: FHIR type name and JSON.
type Item = (String, Value);

/// `resolve()` for the evaluator: a stand-in of the type the reference names (what
/// `resolve() is Patient` needs; the reference's text says the type whether or not it is loaded).
struct Resolver {
    stubs: HashMap<String, Value>,
}

impl fhirpath::ReferenceResolver for Resolver {
    fn resolve(&self, reference: &str) -> Option<&Value> {
        let (ty, _) = ref_target(reference)?;
        self.stubs.get(&ty)
    }
}

fn resolver() -> &'static Resolver {
    static R: std::sync::OnceLock<Resolver> = std::sync::OnceLock::new();
    R.get_or_init(|| Resolver {
        stubs: Definitions::core()
            .resource_types()
            .map(|t| (t.to_string(), serde_json::json!({"resourceType": t})))
            .collect(),
    })
}

fn items(ty: &str, code: &str, r: &Value) -> Vec<Item> {
    let Some(def) = Definitions::core()
        .search_parameters(ty)
        .find(|p| p.code == code)
    else {
        panic!("{ty}.{code} is not a core parameter");
    };
    let Some(expr) = &def.expression else {
        return vec![];
    };
    let e = fhirpath::parse(expr).expect("core expression parses");
    let mut env = Environment::for_resource(r);
    env.resolver = Some(resolver());
    match e.evaluate(&env) {
        Ok(c) => c
            .iter()
            .map(|v| {
                let json = match v {
                    PathValue::Node(n) => n.json.cloned().unwrap_or(Value::Null),
                    o => o.to_json(),
                };
                (v.type_name().to_string(), json)
            })
            .collect(),
        Err(_) => vec![],
    }
}

fn kind(ty: &str, code: &str) -> String {
    Definitions::core()
        .search_parameters(ty)
        .find(|p| p.code == code)
        .map(|p| p.kind.clone())
        .unwrap_or_default()
}

fn targets(ty: &str, code: &str) -> Vec<String> {
    Definitions::core()
        .search_parameters(ty)
        .find(|p| p.code == code)
        .map(|p| p.target.clone())
        .unwrap_or_default()
}

fn fold(s: &str) -> String {
    let s: String = s
        .nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .collect();
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn strings_of(ty: &str, v: &Value, out: &mut Vec<String>) {
    let parts: &[&str] = match ty {
        "HumanName" => &["family", "given", "prefix", "suffix", "text"],
        "Address" => &[
            "line",
            "city",
            "district",
            "state",
            "postalCode",
            "country",
            "text",
        ],
        _ => &[],
    };
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Object(m) if !parts.is_empty() => {
            for p in parts {
                match m.get(*p) {
                    Some(Value::String(s)) => out.push(s.clone()),
                    Some(Value::Array(a)) => {
                        out.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string)))
                    }
                    _ => {}
                }
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                if !["extension", "use", "system", "period", "type", "id"].contains(&k.as_str()) {
                    strings_of("", x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| strings_of("", x, out)),
        _ => {}
    }
}

/// (system, code, display/text) triples of a token item.
fn tokens_of(ty: &str, v: &Value) -> Vec<(String, String, String)> {
    let s = |x: &Value, k: &str| x.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    match (ty, v) {
        (_, Value::String(c)) => vec![(String::new(), c.clone(), String::new())],
        (_, Value::Bool(b)) => vec![(String::new(), b.to_string(), String::new())],
        ("CodeableConcept", _) => {
            let mut out: Vec<_> = v["coding"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| (s(c, "system"), s(c, "code"), s(c, "display")))
                .collect();
            if let Some(t) = v.get("text").and_then(Value::as_str) {
                out.push((String::new(), String::new(), t.to_string()));
            }
            out
        }
        ("Identifier", _) => vec![(
            s(v, "system"),
            s(v, "value"),
            v.get("type").map(|t| s(t, "text")).unwrap_or_default(),
        )],
        ("ContactPoint", _) => vec![(s(v, "system"), s(v, "value"), String::new())],
        _ => vec![(s(v, "system"), s(v, "code"), s(v, "display"))],
    }
}

/// Civil date-time to ms (independent of the server's routine: via the `time` crate).
#[allow(clippy::too_many_arguments)]
fn ms(y: i32, mo: u8, d: u8, h: u8, mi: u8, s: u8, milli: u16, offset_min: i64) -> Option<i64> {
    let date = time::Date::from_calendar_date(y, time::Month::try_from(mo).ok()?, d).ok()?;
    let t = time::Time::from_hms_milli(h, mi, s, milli).ok()?;
    let dt = time::PrimitiveDateTime::new(date, t).assume_utc();
    Some((dt.unix_timestamp_nanos() / 1_000_000) as i64 - offset_min * 60_000)
}

fn date_range(s: &str) -> Option<(i64, i64)> {
    let n = |a: usize, b: usize| s.get(a..b).and_then(|x| x.parse::<u32>().ok());
    let y = n(0, 4)? as i32;
    match s.len() {
        4 => Some((
            ms(y, 1, 1, 0, 0, 0, 0, 0)?,
            ms(y + 1, 1, 1, 0, 0, 0, 0, 0)? - 1,
        )),
        7 => {
            let m = n(5, 7)? as u8;
            let next = if m == 12 {
                ms(y + 1, 1, 1, 0, 0, 0, 0, 0)?
            } else {
                ms(y, m + 1, 1, 0, 0, 0, 0, 0)?
            };
            Some((ms(y, m, 1, 0, 0, 0, 0, 0)?, next - 1))
        }
        10 => {
            let lo = ms(y, n(5, 7)? as u8, n(8, 10)? as u8, 0, 0, 0, 0, 0)?;
            Some((lo, lo + 86_400_000 - 1))
        }
        _ => {
            let (m, d, h, mi) = (
                n(5, 7)? as u8,
                n(8, 10)? as u8,
                n(11, 13)? as u8,
                n(14, 16)? as u8,
            );
            let rest = &s[16..];
            let (sec, frac, zone) = if let Some(r) = rest.strip_prefix(':') {
                let sec = r.get(0..2)?.parse::<u8>().ok()?;
                let r = &r[2..];
                let (frac, zone) = match r.strip_prefix('.') {
                    Some(f) => {
                        let end = f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len());
                        (Some(&f[..end]), &f[end..])
                    }
                    None => (None, r),
                };
                (Some(sec), frac, zone)
            } else {
                (None, None, rest)
            };
            let off = match zone {
                "Z" | "" => 0,
                z => {
                    let sign = if z.starts_with('-') { -1 } else { 1 };
                    sign * (z.get(1..3)?.parse::<i64>().ok()? * 60
                        + z.get(4..6)?.parse::<i64>().ok()?)
                }
            };
            let milli = frac
                .map(|f| format!("{f:0<3}")[..3].parse::<u16>().unwrap_or(0))
                .unwrap_or(0);
            let lo = ms(y, m, d, h, mi, sec.unwrap_or(0), milli, off)?;
            let width = if frac.is_some() {
                1
            } else if sec.is_some() {
                1000
            } else {
                60_000
            };
            Some((lo, lo + width - 1))
        }
    }
}

fn date_ranges_of(ty: &str, v: &Value) -> Vec<(i64, i64)> {
    match v {
        Value::String(s) => date_range(s).into_iter().collect(),
        Value::Object(_) if ty == "Period" => {
            let lo = v
                .get("start")
                .and_then(Value::as_str)
                .and_then(date_range)
                .map_or(i64::MIN, |r| r.0);
            let hi = v
                .get("end")
                .and_then(Value::as_str)
                .and_then(date_range)
                .map_or(i64::MAX, |r| r.1);
            vec![(lo, hi)]
        }
        _ => vec![],
    }
}

fn date_matches(prefix: &str, (lo, hi): (i64, i64), (slo, shi): (i64, i64)) -> bool {
    let contained = lo >= slo && hi <= shi;
    match prefix {
        "eq" => contained,
        "ne" => !contained,
        "gt" => hi > shi,
        "lt" => lo < slo,
        "ge" => hi > shi || contained,
        "le" => lo < slo || contained,
        "sa" => lo > shi,
        "eb" => hi < slo,
        _ => false,
    }
}

fn split_prefix(v: &str) -> (&str, &str) {
    match v.get(..2) {
        Some(p @ ("eq" | "ne" | "gt" | "lt" | "ge" | "le" | "sa" | "eb" | "ap")) => (p, &v[2..]),
        _ => ("eq", v),
    }
}

fn num_matches(prefix: &str, x: f64, v: &str) -> bool {
    let t: f64 = v.parse().unwrap();
    let decimals = v.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
    let half = 0.5 * 10f64.powi(-decimals);
    prefix_matches(prefix, x, t, half)
}

/// `x` against the searched `t`, whose precision implies `[t - half, t + half)`.
fn prefix_matches(prefix: &str, x: f64, t: f64, half: f64) -> bool {
    match prefix {
        "eq" => x >= t - half && x < t + half,
        "ne" => !(x >= t - half && x < t + half),
        "gt" | "sa" => x > t,
        "lt" | "eb" => x < t,
        "ge" => x >= t,
        "le" => x <= t,
        "ap" => x >= t - (t * 0.1).abs() && x <= t + (t * 0.1).abs(),
        _ => false,
    }
}

const UCUM: &str = "http://unitsofmeasure.org";

/// The factor of a UCUM unit over its base units and the base-unit expression, by the FHIRPath
/// engine's conversion (`None` when the unit has no such form).
fn ucum_base(unit: &str) -> Option<(rust_decimal::Decimal, String)> {
    let q = fhirpath::Quantity {
        value: rust_decimal::Decimal::ONE,
        unit: unit.to_string(),
    }
    .canonical()?;
    Some((q.value, q.unit))
}

/// [`num_matches`] of a stored value `x` (in a unit of factor `fx`) against a searched `v` (in a
/// unit of factor `fv`), both taken to base units; the searched precision scales too.
fn num_matches_scaled(
    prefix: &str,
    x: &str,
    fx: rust_decimal::Decimal,
    v: &str,
    fv: rust_decimal::Decimal,
) -> bool {
    use rust_decimal::prelude::ToPrimitive;
    let dec = |s: &str| s.parse::<rust_decimal::Decimal>().ok();
    let (Some(x), Some(t)) = (dec(x), dec(v)) else {
        return false;
    };
    let x = (x * fx).to_f64().unwrap();
    let t = (t * fv).to_f64().unwrap();
    let decimals = v.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
    let half = 0.5 * 10f64.powi(-decimals) * fv.to_f64().unwrap();
    prefix_matches(prefix, x, t, half)
}

fn ref_target(v: &str) -> Option<(String, String)> {
    let v = v.split("/_history/").next()?;
    let mut segs = v.rsplit('/');
    let id = segs.next()?;
    let ty = segs.next()?;
    Definitions::core()
        .is_resource_type(ty)
        .then(|| (ty.to_string(), id.to_string()))
}

fn refs_of(ty: &str, code: &str, r: &Value) -> Vec<String> {
    items(ty, code, r)
        .into_iter()
        .filter_map(|(_, v)| match v {
            Value::String(s) => Some(s),
            v => v
                .get("reference")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
        .collect()
}

/// Whether resource `r` (of `ty`, id `id`) matches one parameter `name=value`.
fn matches(w: &World, ty: &str, id: &str, r: &Value, name: &str, value: &str) -> bool {
    if let Some(rest) = name.strip_prefix("_has:") {
        let mut p = rest.splitn(3, ':');
        let (src, param, inner) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
        return w.of_type(src).any(|(sid, sr)| {
            refs_of(src, param, sr)
                .iter()
                .any(|x| ref_target(x) == Some((ty.to_string(), id.to_string())))
                && matches(w, src, sid, sr, inner, value)
        });
    }
    if let Some((head, tail)) = name.split_once('.') {
        let (code, only) = match head.split_once(':') {
            Some((c, t)) => (c, Some(t)),
            None => (head, None),
        };
        return refs_of(ty, code, r).iter().any(|x| {
            let Some((tt, tid)) = ref_target(x) else {
                return false;
            };
            if only.is_some_and(|o| o != tt) {
                return false;
            }
            if Definitions::core()
                .search_parameters(&tt)
                .all(|p| p.code != tail.split([':', '.']).next().unwrap_or(tail))
            {
                return false;
            }
            w.resources
                .get(&(tt.clone(), tid.clone()))
                .is_some_and(|t| matches(w, &tt, &tid, t, tail, value))
        });
    }
    let (code, modifier) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    };
    if code == "_id" {
        return value.split(',').any(|v| v == id);
    }
    let its = items(ty, code, r);
    let k = kind(ty, code);
    if modifier == Some("missing") {
        // A date element holding something that is no date (`occurrenceString`) has no date value.
        let present = if k == "date" {
            its.iter().any(|(t, j)| !date_ranges_of(t, j).is_empty())
        } else {
            !its.is_empty()
        };
        return (value == "true") != present;
    }
    if modifier == Some("not") {
        return !matches(w, ty, id, r, code, value);
    }
    value.split(',').any(|v| match k.as_str() {
        "string" => {
            let mut strings = vec![];
            for (t, j) in &its {
                strings_of(t, j, &mut strings);
            }
            strings.iter().any(|s| match modifier {
                Some("exact") => s == v,
                Some("contains") => fold(s).contains(&fold(v)),
                _ => fold(s).starts_with(&fold(v)),
            })
        }
        "token" => {
            its.iter()
                .flat_map(|(t, j)| tokens_of(t, j))
                .any(|(sys, c, text)| match modifier {
                    Some("text") => !text.is_empty() && fold(&text).contains(&fold(v)),
                    _ => match v.split_once('|') {
                        Some(("", c2)) => sys.is_empty() && c == c2,
                        Some((s2, "")) => sys == s2 && !c.is_empty(),
                        Some((s2, c2)) => sys == s2 && c == c2,
                        None => !c.is_empty() && c == v,
                    },
                })
        }
        "date" => {
            let (prefix, d) = split_prefix(v);
            let search = date_range(d).expect("query date");
            its.iter()
                .flat_map(|(t, j)| date_ranges_of(t, j))
                .any(|range| date_matches(prefix, range, search))
        }
        "quantity" | "number" => {
            let (prefix, rest) = split_prefix(v);
            let mut parts = rest.split('|');
            let num = parts.next().unwrap();
            let system = parts.next().unwrap_or("");
            let unit = parts.next().unwrap_or("");
            its.iter().any(|(_, j)| {
                let x = match j {
                    Value::Number(n) => n.to_string().parse::<f64>().ok(),
                    o => o
                        .get("value")
                        .map(|n| n.to_string().parse::<f64>().unwrap_or(f64::NAN)),
                };
                let Some(x) = x else { return false };
                let s = j.get("system").and_then(Value::as_str).unwrap_or("");
                let c = j.get("code").and_then(Value::as_str).unwrap_or("");
                let u = j.get("unit").and_then(Value::as_str).unwrap_or("");
                if system == UCUM && !unit.is_empty() {
                    // A UCUM unit: both sides in base units, where the unit has that form.
                    let stored = if c.is_empty() { u } else { c };
                    if let Some((factor, canon)) = ucum_base(unit) {
                        let value = j.get("value").map(Value::to_string).unwrap_or_default();
                        return s == UCUM
                            && ucum_base(stored).is_some_and(|(f, cu)| {
                                cu == canon && num_matches_scaled(prefix, &value, f, num, factor)
                            });
                    }
                    return s == UCUM && stored == unit && num_matches(prefix, x, num);
                }
                num_matches(prefix, x, num)
                    && (system.is_empty() || s == system)
                    && (unit.is_empty() || c == unit || (c.is_empty() && u == unit))
            })
        }
        "reference" => refs_of(ty, code, r).iter().any(|x| {
            let t = ref_target(x);
            match (modifier, v.split_once('/')) {
                (Some(only), _) => t == Some((only.to_string(), v.to_string())),
                (None, Some((vt, vid))) => t == Some((vt.to_string(), vid.to_string())),
                (None, None) => t.is_some_and(|(tt, tid)| {
                    tid == v && (targets(ty, code).is_empty() || targets(ty, code).contains(&tt))
                }),
            }
        }),
        "uri" => its
            .iter()
            .filter_map(|(_, j)| j.as_str().map(str::to_string))
            .any(|u| match modifier {
                Some("below") => u.starts_with(v),
                Some("above") => v.starts_with(&u),
                _ => u == v,
            }),
        _ => false,
    })
}

fn expected(w: &World, ty: &str, query: &str) -> BTreeSet<String> {
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    w.of_type(ty)
        .filter(|(id, r)| params.iter().all(|(k, v)| matches(w, ty, id, r, k, v)))
        .map(|(id, _)| id.clone())
        .collect()
}

async fn server_ids(s: &TestServer, ty: &str, query: &str) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    let mut url = s.url(&format!("{ty}?{query}&_count=1000"));
    loop {
        let (status, b) = json_of(s.http.get(&url).send().await.unwrap()).await;
        if status != 200 {
            return Err(format!("status {status}: {b}"));
        }
        for e in b["entry"].as_array().into_iter().flatten() {
            if e["search"]["mode"] == "match" {
                out.insert(e["resource"]["id"].as_str().unwrap().to_string());
            }
        }
        match b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(l) => url = l["url"].as_str().unwrap().to_string(),
            None => return Ok(out),
        }
    }
}

async fn load() -> Option<(TestServer, World)> {
    let tgz = common::corpora("synthea/synthea-r4-bundles.tgz")?;
    let examples = common::r4_examples()?;
    let s = TestServer::start().await;
    let mut files = common::tgz_files(&tgz);
    files.retain(|(n, _)| n.ends_with(".json"));
    let (mut infra, mut patients): (Vec<_>, Vec<_>) = files.into_iter().partition(|(n, _)| {
        n.contains("hospitalInformation") || n.contains("practitionerInformation")
    });
    // The three smallest patients keep the runtime small.
    patients.sort_by_key(|(_, b)| b.len());
    patients.truncate(3);
    infra.extend(patients);
    let mut keys: Vec<Key> = vec![];
    for (name, bytes) in &infra {
        let bundle: Value = serde_json::from_slice(bytes).unwrap();
        let (status, resp) = json_of(s.send(Method::POST, "", &bundle).await).await;
        assert_eq!(status, 200, "{name}: {resp}");
        for e in resp["entry"].as_array().unwrap() {
            let loc = e["response"]["location"].as_str().unwrap();
            let mut p = loc.split('/').rev().skip(2);
            let id = p.next().unwrap().to_string();
            let ty = p.next().unwrap().to_string();
            keys.push((ty, id));
        }
    }
    let wanted = [
        "Patient",
        "Practitioner",
        "Organization",
        "Observation",
        "Encounter",
        "Condition",
        "Procedure",
        "Immunization",
        "MedicationRequest",
        "DiagnosticReport",
        "AllergyIntolerance",
        "RiskAssessment",
        "ValueSet",
        "CodeSystem",
    ];
    for (name, bytes) in &examples {
        let Ok(r) = serde_json::from_slice::<Value>(bytes) else {
            continue;
        };
        let (Some(ty), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) else {
            continue;
        };
        if !wanted.contains(&ty) {
            continue;
        }
        let resp = s.send(Method::PUT, &format!("{ty}/{id}"), &r).await;
        if resp.status().is_success() {
            keys.push((ty.to_string(), id.to_string()));
        } else {
            let _ = name;
        }
    }
    let mut w = World {
        resources: HashMap::new(),
        by_type: HashMap::new(),
    };
    for (ty, id) in keys {
        let (status, r) = json_of(s.get(&format!("{ty}/{id}")).await).await;
        assert_eq!(status, 200);
        w.by_type.entry(ty.clone()).or_default().push(id.clone());
        w.resources.insert((ty, id), r);
    }
    Some((s, w))
}

/// Queries built from the data: for each parameter, values sampled from the resources, with
/// every modifier and prefix of its type.
fn queries(w: &World) -> Vec<(String, String)> {
    let plan: &[(&str, &[&str])] = &[
        (
            "Patient",
            &[
                "name",
                "family",
                "given",
                "gender",
                "birthdate",
                "address-city",
                "address-state",
                "address-postalcode",
                "identifier",
                "telecom",
                "organization",
                "general-practitioner",
                "deceased",
                "language",
            ],
        ),
        (
            "Observation",
            &[
                "code",
                "category",
                "status",
                "date",
                "value-quantity",
                "subject",
                "patient",
                "encounter",
                "value-concept",
            ],
        ),
        (
            "Encounter",
            &[
                "class",
                "type",
                "date",
                "subject",
                "status",
                "participant",
                "service-provider",
                "reason-code",
            ],
        ),
        (
            "Condition",
            &[
                "code",
                "clinical-status",
                "onset-date",
                "subject",
                "verification-status",
                "encounter",
            ],
        ),
        ("Procedure", &["code", "date", "subject", "status"]),
        (
            "Immunization",
            &["vaccine-code", "date", "patient", "status"],
        ),
        (
            "MedicationRequest",
            &["status", "intent", "authoredon", "subject", "code"],
        ),
        (
            "DiagnosticReport",
            &["code", "date", "subject", "status", "category"],
        ),
        (
            "Organization",
            &["name", "address-city", "identifier", "type", "active"],
        ),
        ("Practitioner", &["name", "identifier", "gender", "family"]),
        ("RiskAssessment", &["probability", "subject"]),
        ("ValueSet", &["url", "status", "name"]),
    ];
    let mut out: Vec<(String, String)> = vec![];
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    for (ty, codes) in plan {
        let resources: Vec<(&String, &Value)> = w.of_type(ty).collect();
        for code in *codes {
            let k = kind(ty, code);
            // Samples from two resources far apart in the list.
            let mut samples: Vec<Item> = vec![];
            for idx in [0, resources.len() / 2, resources.len().saturating_sub(1)] {
                if let Some((_, r)) = resources.get(idx)
                    && let Some(i) = items(ty, code, r).into_iter().next()
                    && !samples.contains(&i)
                {
                    samples.push(i);
                }
            }
            out.push((ty.to_string(), format!("{code}:missing=true")));
            out.push((ty.to_string(), format!("{code}:missing=false")));
            for (t, j) in samples.iter().take(2) {
                match k.as_str() {
                    "string" => {
                        let mut ss = vec![];
                        strings_of(t, j, &mut ss);
                        if let Some(sv) = ss.first() {
                            let chars: Vec<char> = sv.chars().collect();
                            let pre: String = chars.iter().take(3).collect();
                            let mid: String = chars.iter().skip(1).take(3).collect();
                            out.push((
                                ty.to_string(),
                                format!("{code}={}", enc(&pre.to_uppercase())),
                            ));
                            out.push((ty.to_string(), format!("{code}:exact={}", enc(sv))));
                            out.push((ty.to_string(), format!("{code}:contains={}", enc(&mid))));
                        }
                    }
                    "token" => {
                        if let Some((sys, c, text)) =
                            tokens_of(t, j).into_iter().find(|x| !x.1.is_empty())
                        {
                            out.push((ty.to_string(), format!("{code}={}", enc(&c))));
                            if !sys.is_empty() {
                                out.push((
                                    ty.to_string(),
                                    format!("{code}={}", enc(&format!("{sys}|{c}"))),
                                ));
                                out.push((
                                    ty.to_string(),
                                    format!("{code}={}", enc(&format!("{sys}|"))),
                                ));
                                out.push((
                                    ty.to_string(),
                                    format!("{code}:not={}", enc(&format!("{sys}|{c}"))),
                                ));
                            } else {
                                out.push((
                                    ty.to_string(),
                                    format!("{code}={}", enc(&format!("|{c}"))),
                                ));
                                out.push((ty.to_string(), format!("{code}:not={}", enc(&c))));
                            }
                            if let Some(word) = text
                                .split_whitespace()
                                .next()
                                .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
                                .filter(|w| !w.is_empty())
                            {
                                out.push((ty.to_string(), format!("{code}:text={}", enc(word))));
                            }
                        }
                    }
                    "date" => {
                        let d = match j {
                            Value::String(s) => Some(s.clone()),
                            o => o
                                .get("start")
                                .or(o.get("end"))
                                .and_then(Value::as_str)
                                .map(str::to_string),
                        };
                        if let Some(d) = d {
                            let day = &d[..d.len().min(10)];
                            let month = &d[..d.len().min(7)];
                            let year = &d[..d.len().min(4)];
                            for p in ["", "ne", "gt", "lt", "ge", "le", "sa", "eb"] {
                                out.push((ty.to_string(), format!("{code}={p}{day}")));
                            }
                            out.push((ty.to_string(), format!("{code}={month}")));
                            out.push((
                                ty.to_string(),
                                format!(
                                    "{code}=ge{year}&{code}=lt{}",
                                    year.parse::<i32>().unwrap_or(2000) + 2
                                ),
                            ));
                            if d.len() > 10 {
                                out.push((ty.to_string(), format!("{code}=gt{}", enc(&d))));
                                out.push((ty.to_string(), format!("{code}={}", enc(&d))));
                            }
                        }
                    }
                    "quantity" | "number" => {
                        let n = match j {
                            Value::Number(n) => Some(n.to_string()),
                            o => o.get("value").map(|n| n.to_string()),
                        };
                        if let Some(n) = n {
                            for p in ["", "ne", "gt", "lt", "ge", "le", "ap"] {
                                out.push((ty.to_string(), format!("{code}={p}{n}")));
                            }
                            if let (Some(sys), Some(c)) = (
                                j.get("system").and_then(Value::as_str),
                                j.get("code").and_then(Value::as_str),
                            ) {
                                out.push((
                                    ty.to_string(),
                                    format!("{code}=ge{n}|{}|{}", enc(sys), enc(c)),
                                ));
                                out.push((ty.to_string(), format!("{code}=le{n}||{}", enc(c))));
                            }
                        }
                    }
                    "reference" => {
                        let r = match j {
                            Value::String(s) => Some(s.clone()),
                            o => o
                                .get("reference")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                        };
                        if let Some((tt, tid)) = r.as_deref().and_then(ref_target) {
                            out.push((ty.to_string(), format!("{code}={tt}/{tid}")));
                            out.push((ty.to_string(), format!("{code}={tid}")));
                            out.push((ty.to_string(), format!("{code}:{tt}={tid}")));
                        }
                    }
                    "uri" => {
                        if let Some(u) = j.as_str() {
                            out.push((ty.to_string(), format!("{code}={}", enc(u))));
                            out.push((
                                ty.to_string(),
                                format!("{code}:below={}", enc(&u[..u.len().min(20)])),
                            ));
                            out.push((
                                ty.to_string(),
                                format!("{code}:above={}", enc(&format!("{u}/x"))),
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    // Chains, reverse chains, AND/OR and common parameters.
    let patient = w
        .of_type("Patient")
        .next()
        .map(|(id, r)| (id.clone(), r.clone()));
    if let Some((pid, p)) = patient {
        let family = p["name"][0]["family"].as_str().unwrap_or("x").to_string();
        let f3: String = family.chars().take(3).collect();
        let gender = p["gender"].as_str().unwrap_or("male").to_string();
        for ty in [
            "Observation",
            "Encounter",
            "Condition",
            "Procedure",
            "DiagnosticReport",
        ] {
            out.push((ty.into(), format!("subject:Patient.family={}", enc(&f3))));
            out.push((ty.into(), format!("subject:Patient.gender={gender}")));
            out.push((ty.into(), format!("subject.name={}", enc(&f3))));
            out.push((ty.into(), "subject:Patient.organization.name=a".to_string()));
            out.push((
                ty.into(),
                "subject:Patient.general-practitioner.name=a".to_string(),
            ));
            out.push((ty.into(), format!("subject=Patient/{pid}")));
        }
        out.push(("Observation".into(), "encounter.class=AMB,EMER".into()));
        out.push((
            "Observation".into(),
            format!("subject=Patient/{pid}&status=final,amended"),
        ));
        out.push((
            "Observation".into(),
            "encounter.service-provider.name=a".into(),
        ));
        out.push((
            "Patient".into(),
            format!("gender={gender}&family={}", enc(&f3)),
        ));
        out.push(("Patient".into(), format!("_id={pid}")));
        out.push(("Patient".into(), format!("_id={pid},nothere")));
    }
    for (code, source, param) in [
        ("Observation", "Observation", "subject"),
        ("Condition", "Condition", "subject"),
        ("Encounter", "Encounter", "subject"),
    ] {
        let c = w.of_type(source).next().and_then(|(_, r)| {
            items(
                source,
                if code == "Encounter" { "class" } else { "code" },
                r,
            )
            .into_iter()
            .next()
        });
        if let Some((t, j)) = c
            && let Some((_, cc, _)) = tokens_of(&t, &j).into_iter().find(|x| !x.1.is_empty())
        {
            let inner = if code == "Encounter" { "class" } else { "code" };
            out.push((
                "Patient".into(),
                format!("_has:{source}:{param}:{inner}={}", enc(&cc)),
            ));
            out.push((
                "Practitioner".into(),
                format!(
                    "_has:Patient:general-practitioner:_has:{source}:{param}:{inner}={}",
                    enc(&cc)
                ),
            ));
            out.push((
                "Organization".into(),
                format!(
                    "_has:Patient:organization:_has:{source}:{param}:{inner}={}",
                    enc(&cc)
                ),
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_results_equal_the_brute_force_evaluator() {
    let Some((s, w)) = load().await else { return };
    let qs = queries(&w);
    let (mut passed, mut failed) = (0, vec![]);
    let mut nonempty = 0;
    for (ty, q) in &qs {
        let want = expected(&w, ty, q);
        match server_ids(&s, ty, q).await {
            Ok(got) if got == want => {
                passed += 1;
                if !want.is_empty() {
                    nonempty += 1;
                }
            }
            Ok(got) => {
                let extra: Vec<_> = got.difference(&want).take(3).collect();
                let missing: Vec<_> = want.difference(&got).take(3).collect();
                failed.push(format!(
                    "{ty}?{q}: server {} vs expected {} (extra {extra:?}, missing {missing:?})",
                    got.len(),
                    want.len()
                ));
            }
            Err(e) => failed.push(format!("{ty}?{q}: {e}")),
        }
    }
    println!(
        "search corpus: {} resources, {passed} passed ({nonempty} with matches), {} failed",
        w.resources.len(),
        failed.len()
    );
    for f in failed.iter().take(40) {
        println!("  {f}");
    }
    assert!(passed >= 150, "only {passed} queries");
    assert!(nonempty >= 100, "only {nonempty} queries with matches");
    assert!(failed.is_empty(), "{} failed", failed.len());

    // Sort order against the evaluator: by birthdate descending, ties by id.
    let mut pats: Vec<(String, String)> = w
        .of_type("Patient")
        .map(|(id, r)| {
            (
                r["birthDate"].as_str().unwrap_or("").to_string(),
                id.clone(),
            )
        })
        .collect();
    pats.sort_by(|a, b| {
        (a.0.is_empty(), std::cmp::Reverse(a.0.clone()), a.1.clone()).cmp(&(
            b.0.is_empty(),
            std::cmp::Reverse(b.0.clone()),
            b.1.clone(),
        ))
    });
    let (_, b) = json_of(s.get("Patient?_sort=-birthdate,_id&_count=1000").await).await;
    let got: Vec<String> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    // Equal birth dates at day precision: descending sorts by the range's end, so the order is
    // that of the date strings only when they have one precision; compare the sets and the first.
    assert_eq!(got.len(), pats.len());
    assert_eq!(got.first(), pats.first().map(|p| &p.1));
}
