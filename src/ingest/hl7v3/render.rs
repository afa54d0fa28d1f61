//! Responses from the templates of `mappings/hl7v3/templates/`: `{{$name}}` is a value of the
//! exchange (message ids, devices, the acknowledgement code, the rendered subjects), `{{EXPR}}`
//! in a subject template is a FHIRPath expression over the resource (its first value, as text).
//! Every substituted value is XML-escaped, so data cannot change the response's structure.

use super::Header;
use super::interactions::{Interactions, Query};
use crate::xml::escape;
use serde_json::Value;

fn fhirpath_text(expr: &str, resource: &Value) -> String {
    match crate::fhirpath::evaluate_json(expr, resource) {
        Ok(v) => match v.first() {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => String::new(),
        },
        Err(_) => String::new(),
    }
}

/// Fills a template. `raw` names variables inserted without escaping (rendered XML).
pub fn fill(
    template: &str,
    vars: &[(&str, String)],
    raw: &[&str],
    resource: Option<&Value>,
) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let key = after[..end].trim();
        if let Some(name) = key.strip_prefix('$') {
            let v = vars
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            if raw.contains(&name) {
                out.push_str(v);
            } else {
                out.push_str(&escape(v));
            }
        } else if let Some(r) = resource {
            out.push_str(&escape(&fhirpath_text(key, r)));
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn common(h: &Header, now: &str) -> Vec<(&'static str, String)> {
    vec![
        ("id", uuid::Uuid::new_v4().to_string()),
        ("creation_time", now.to_string()),
        ("sender", h.sender.clone()),
        ("receiver", h.receiver.clone()),
        (
            "target_root",
            if h.id_root.is_empty() {
                "2.16.156.10011.2.5.1.1".into()
            } else {
                h.id_root.clone()
            },
        ),
        ("target_id", h.id.clone()),
        ("target_interaction", h.interaction.clone()),
    ]
}

/// What an acknowledgement says: AA (detail I), AA with warnings (detail W), AE (detail E).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Warned,
    Refused,
}

/// MCCI_IN000002UV01 with AA or AE.
pub fn ack(ix: &Interactions, h: &Header, outcome: Outcome, detail: &str, now: &str) -> String {
    let template = ix
        .templates
        .get("MCCI_IN000002UV01")
        .map(String::as_str)
        .unwrap_or(FALLBACK_ACK);
    let mut vars = common(h, now);
    let (code, detail_type) = match outcome {
        Outcome::Accepted => ("AA", "I"),
        Outcome::Warned => ("AA", "W"),
        Outcome::Refused => ("AE", "E"),
    };
    vars.push(("ack_code", code.into()));
    vars.push(("detail", detail.to_string()));
    vars.push(("detail_type", detail_type.into()));
    fill(template, &vars, &[], None)
}

/// Without templates (the interaction files did not load) an AE must still be well-formed.
const FALLBACK_ACK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MCCI_IN000002UV01 xmlns="urn:hl7-org:v3" ITSVersion="XML_1.0"><id root="2.16.156.10011.2.5.1.1" extension="{{$id}}"/><creationTime value="{{$creation_time}}"/><interactionId root="2.16.156.10011.2.5.1.2" extension="MCCI_IN000002UV01"/><acknowledgement typeCode="{{$ack_code}}"><targetMessage><id root="{{$target_root}}" extension="{{$target_id}}"/></targetMessage><acknowledgementDetail typeCode="{{$detail_type}}"><text value="{{$detail}}"/></acknowledgementDetail></acknowledgement></MCCI_IN000002UV01>
"#;

/// A query response: the response template with one rendered subject per resource found.
pub fn query_response(
    ix: &Interactions,
    q: &Query,
    h: &Header,
    query_id: &str,
    found: &[Value],
    now: &str,
) -> String {
    let subject = ix
        .templates
        .get(&q.subject)
        .map(String::as_str)
        .unwrap_or("");
    // `{{$reference}}` is the resource's `Type/id`: `resourceType` is not a FHIRPath element, so
    // a template cannot compute it.
    let subjects: String = found
        .iter()
        .map(|r| {
            let mut vars = common(h, now);
            vars.push((
                "reference",
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap_or_default(),
                    r["id"].as_str().unwrap_or_default()
                ),
            ));
            fill(subject, &vars, &[], Some(r))
        })
        .collect();
    let mut vars = common(h, now);
    vars.push(("ack_code", "AA".into()));
    vars.push(("query_id", query_id.to_string()));
    vars.push(("answer", q.answer.clone()));
    vars.push((
        "query_response_code",
        if found.is_empty() { "NF" } else { "OK" }.into(),
    ));
    vars.push(("count", found.len().to_string()));
    vars.push(("subjects", subjects));
    let template = ix
        .templates
        .get(&q.response)
        .map(String::as_str)
        .unwrap_or("");
    fill(template, &vars, &["subjects"], None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_escape_values_and_evaluate_fhirpath() {
        let r = serde_json::json!({"resourceType": "Patient", "name": [{"text": "张<三>"}]});
        let out = fill(
            "<n v=\"{{name.first().text}}\" m=\"{{$x}}\">{{$raw}}</n>",
            &[("x", "a\"b".into()), ("raw", "<i/>".into())],
            &["raw"],
            Some(&r),
        );
        assert_eq!(out, "<n v=\"张&lt;三&gt;\" m=\"a&quot;b\"><i/></n>");
    }
}
