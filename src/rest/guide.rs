//! `GET [base]/ImplementationGuide/cn`: the local implementation guide for Chinese
//! health-information exchange, generated from what the registry has actually loaded, so the
//! guide never lists a resource the server does not know (or misses one it does).

use super::AppState;
use super::http::{self, Params, finish, json_response};
use crate::registry::Catalogue;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

/// The canonical base of every resource of the guide (`profiles/cn/`).
pub const CN_GUIDE_BASE: &str = "http://huitong.dev/fhir/cn";

/// The guide's groups, in the order they are listed.
const GROUPS: [(&str, &str, &str); 5] = [
    (
        "profiles",
        "Profiles",
        "StructureDefinitions constraining resources",
    ),
    (
        "extensions",
        "Extensions",
        "StructureDefinitions of extensions",
    ),
    (
        "terminology",
        "Terminology",
        "CodeSystems, ValueSets and ConceptMaps",
    ),
    (
        "naming-systems",
        "Naming systems",
        "Identifier systems (NamingSystems)",
    ),
    ("other", "Other", "Other definitions"),
];

/// `GET [base]/ImplementationGuide/cn`.
pub async fn cn(State(st): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let result = (|| {
        let params = Params::parse(q.as_deref());
        let format = http::negotiate(&headers, &params)?;
        params.only(&[])?;
        let guide = implementation_guide(&st.registry.catalogue());
        Ok(json_response(
            StatusCode::OK,
            http::body_bytes(&guide, format),
        ))
    })();
    finish(result, "read")
}

/// True for a resource of the guide: its canonical is under [`CN_GUIDE_BASE`], or it is a
/// NamingSystem with the CN jurisdiction (NamingSystems have no canonical URL in R4).
fn in_guide(ty: &str, r: &Value) -> bool {
    if ty == "NamingSystem" {
        return r
            .pointer("/jurisdiction")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|j| {
                j.get("coding")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .any(|c| c.get("code").and_then(Value::as_str) == Some("CN"));
    }
    r.get("url")
        .and_then(Value::as_str)
        .is_some_and(|u| u.starts_with(&format!("{CN_GUIDE_BASE}/")))
}

fn group_of(ty: &str, r: &Value) -> &'static str {
    match ty {
        "StructureDefinition" if r.get("type").and_then(Value::as_str) == Some("Extension") => {
            "extensions"
        }
        "StructureDefinition" => "profiles",
        "CodeSystem" | "ValueSet" | "ConceptMap" => "terminology",
        "NamingSystem" => "naming-systems",
        _ => "other",
    }
}

/// The ImplementationGuide resource listing every loaded resource of the guide.
pub fn implementation_guide(catalogue: &Catalogue) -> Value {
    let mut listed: Vec<(usize, String, Value)> = Vec::new();
    for ty in crate::registry::CONFORMANCE_TYPES {
        for reg in catalogue.all(ty) {
            let r = reg.resource.as_ref();
            if !in_guide(ty, r) {
                continue;
            }
            let Some(id) = r.get("id").and_then(Value::as_str) else {
                continue;
            };
            let group = group_of(ty, r);
            let rank = GROUPS
                .iter()
                .position(|g| g.0 == group)
                .unwrap_or(GROUPS.len());
            let name = r
                .get("title")
                .or_else(|| r.get("name"))
                .and_then(Value::as_str)
                .unwrap_or(id);
            let mut entry = json!({
                "reference": {"reference": format!("{ty}/{id}")},
                "name": name,
                "exampleBoolean": false,
                "groupingId": group,
            });
            if let Some(d) = r.get("description").and_then(Value::as_str) {
                entry["description"] = json!(d);
            }
            listed.push((rank, format!("{ty}/{id}"), entry));
        }
    }
    listed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let used: Vec<&str> = GROUPS
        .iter()
        .enumerate()
        .filter(|(i, _)| listed.iter().any(|l| l.0 == *i))
        .map(|(_, g)| g.0)
        .collect();
    let grouping: Vec<Value> = GROUPS
        .iter()
        .filter(|g| used.contains(&g.0))
        .map(|(id, name, description)| json!({"id": id, "name": name, "description": description}))
        .collect();
    json!({
        "resourceType": "ImplementationGuide",
        "id": "cn",
        "url": format!("{CN_GUIDE_BASE}/ImplementationGuide/cn"),
        "version": "0.1.0",
        "name": "HuitongCNHealthInformationExchange",
        "title": "汇通 中国卫生健康信息互联互通 实施指南 (Huitong local IG for Chinese health-information exchange)",
        "status": "draft",
        "experimental": true,
        "publisher": "Huitong",
        "description": "Profiles, extensions, code systems, concept maps and naming systems for exchanging records coded with Chinese national standards (GB/T, WS, WS/T, NHSA). Generated from the resources this server has loaded.",
        "jurisdiction": [{"coding": [{"system": "urn:iso:std:iso:3166", "code": "CN"}]}],
        "packageId": "huitong.fhir.cn",
        "license": "Apache-2.0",
        "fhirVersion": ["4.0.1"],
        "definition": {
            "grouping": grouping,
            "resource": listed.into_iter().map(|l| l.2).collect::<Vec<_>>(),
        },
    })
}
